"""Rendering for the CLI: tables, JSON, progress bars (Rich imported only when needed)."""
from __future__ import annotations

import json
import sys

from ..domain.sizes import format_size

COLUMNS = {
    "ctid": ("CTID", lambda i: str(i["ctid"])),
    "name": ("NAME", lambda i: i["name"]),
    "state": ("STATE", lambda i: i["state"]),
    "template": ("TEMPLATE", lambda i: i["template"]),
    "ram": ("RAM", lambda i: i["limits_display"]["ram"]),
    "swap": ("SWAP", lambda i: i["limits_display"]["swap"]),
    "cpus": ("CPUS", lambda i: i["limits_display"]["cpus"]),
    "cpuunits": ("CPUUNITS", lambda i: i["limits_display"]["cpuunits"]),
    "cpulimit": ("CPULIMIT", lambda i: i["limits_display"]["cpulimit"]),
    "pids": ("PIDS", lambda i: i["limits_display"]["pids"]),
    "ip": ("IP", lambda i: ",".join(i.get("ip") or []) or "-"),
    "hostname": ("HOSTNAME", lambda i: i["hostname"]),
    "init": ("INIT", lambda i: i["init"]),
    "created": ("CREATED", lambda i: (i.get("created_at") or "-")[:19]),
    "started": ("STARTED", lambda i: (i.get("started_at") or "-")[:19]),
    "owner": ("OWNER", lambda i: i.get("owner") or "-"),
    "tags": ("TAGS", lambda i: ",".join(f"{k}={v}" for k, v in sorted((i.get("tags") or {}).items())) or "-"),
    "description": ("DESCRIPTION", lambda i: i.get("description") or "-"),
}
DEFAULT_COLUMNS = "ctid,name,state,template,ram,swap,ip"
SORT_KEYS = {"ctid": lambda i: i["ctid"], "ram": lambda i: i["limits"]["ram"], "swap": lambda i: i["limits"]["swap"],
             "cpus": lambda i: i["limits"]["cpus"], "cpuunits": lambda i: i["limits"]["cpuunits"],
             "cpulimit": lambda i: i["limits"]["cpulimit"], "pids": lambda i: i["limits"]["pids"]}


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def table(headers: list[str], rows: list[list[str]], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for h in headers:
        t.add_column(h, overflow="fold")
    for r in rows:
        t.add_row(*r)
    Console().print(t)


def instances_table(items: list[dict], columns: str, sort: str | None) -> None:
    cols = [c.strip() for c in columns.split(",") if c.strip()]
    unknown = [c for c in cols if c not in COLUMNS]
    if unknown:
        raise ValueError(f"unknown column(s) {', '.join(unknown)}; choose from {', '.join(COLUMNS)}")
    if sort:
        key = sort.lstrip("-")
        if key not in COLUMNS:
            raise ValueError(f"cannot sort by {key!r}; choose from {', '.join(COLUMNS)}")
        fn = SORT_KEYS.get(key) or (lambda i, f=COLUMNS[key][1]: f(i))
        items = sorted(items, key=fn, reverse=sort.startswith("-"))
    table([COLUMNS[c][0] for c in cols], [[COLUMNS[c][1](i) for c in cols] for i in items])


def instance_detail(i: dict) -> None:
    rows = [["ctid", str(i["ctid"])], ["name", i["name"]], ["state", i["state"]], ["template", i["template"]],
            ["hostname", i["hostname"]], ["init", i["init"]], ["owner", i.get("owner") or "-"],
            ["description", i.get("description") or "-"],
            ["tags", ", ".join(f"{k}={v}" for k, v in sorted((i.get("tags") or {}).items())) or "-"]]
    rows += [[k, v] for k, v in i["limits_display"].items()]
    live = i.get("live") or {}
    changed = {k: v for k, v in live.items() if k in i["limits"] and v != i["limits"][k]}
    if changed:
        from ..domain.limits import LIMITS
        rows.append(["live (unsaved)", ", ".join(f"{k}={LIMITS[k].render(v)}" for k, v in changed.items())])
    u = i.get("usage") or {}
    if u:
        rows += [["memory used", format_size(u.get("memory")) if u.get("memory") is not None else "-"],
                 ["processes", str(u.get("pids") if u.get("pids") is not None else "-")],
                 ["init pid (node)", str(u.get("pid") or "-")]]
    net = i.get("network") or {}
    for nic in net.get("interfaces", []):
        rows.append([nic["ifname"], f"{', '.join(nic['addresses'])} ({nic['network']} {nic['subnet']}, "
                                   f"gw {nic['gateway']}, {nic['mac']})"])
    if net.get("dns", {}).get("nameservers"):
        rows.append(["nameservers", " ".join(net["dns"]["nameservers"])])
    if net.get("forwards"):
        rows.append(["forwards", ", ".join(f"{f['proto']} {f['port']}->{f['target_port']}" for f in net["forwards"])])
    if net.get("public"):
        rows.append(["public", ", ".join(net["public"])])
    rows += [["created", i.get("created_at") or "-"], ["started", i.get("started_at") or "-"],
             ["console log", i.get("console_log", "-")]]
    table(["", ""], rows)


class OpProgress:
    """A Rich progress bar that follows an operation; silent when stderr is not a terminal."""

    def __init__(self, title: str, enabled: bool):
        self.title, self.enabled = title, enabled and sys.stderr.isatty()
        self._progress = self._task = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                      TimeElapsedColumn(), TextColumn("{task.fields[msg]}"),
                                      console=Console(stderr=True), transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.title, total=1.0, msg="")
        return self

    def update(self, op: dict) -> None:
        if self._progress:
            self._progress.update(self._task, completed=op.get("progress", 0), msg=op.get("message", ""))

    @property
    def callback(self):
        return self.update if self.enabled else None

    def __exit__(self, *exc):
        if self._progress:
            self._progress.__exit__(*exc)
        return False
