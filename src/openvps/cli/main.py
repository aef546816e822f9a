"""The openvps CLI: vzctl/pct-like commands, a thin client over the REST API."""
from __future__ import annotations

import functools
import inspect
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..domain.errors import OpenVPSError
from ..domain.limits import LIMITS
from . import render

app = typer.Typer(help="openvps: system containers (VPSes) on one node, the OpenVZ way. "
                  "Instances are named by CTID or name everywhere.", no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]}, pretty_exceptions_enable=False)
template_app = typer.Typer(help="Build, list and remove OS templates.", no_args_is_help=True)
app.add_typer(template_app, name="template")

JSON = typer.Option(False, "--json", help="print JSON")


def client():
    from ..client import Client
    return Client()


def fail(message: str, code: int = 1) -> None:
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


def handled(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OpenVPSError as e:
            fail(e.message)
        except ValueError as e:
            fail(str(e))
    return wrapper


def with_limit_options(fn):
    """Add one --KEY option per row of the limits table (help text from the table)."""
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.name != "limits"]
    for lim in LIMITS.values():
        help_text = f"{lim.help} (default {lim.render(lim.default)}; like {lim.alias})"
        params.append(inspect.Parameter(lim.key, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
                                        default=typer.Option(None, f"--{lim.key}", help=help_text,
                                                             rich_help_panel="Limits")))

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        limits = {k: kwargs.pop(k) for k in LIMITS if kwargs.get(k) is not None}
        for k in LIMITS:
            kwargs.pop(k, None)
        return fn(*args, limits=limits, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=params)
    wrapper.__annotations__ = {**{p.name: p.annotation for p in params}}
    return wrapper


def follow(op: dict, title: str, quiet: bool = False) -> dict:
    with render.OpProgress(title, enabled=not quiet) as bar:
        return client().wait(op, on_progress=bar.callback)


# ------------------------------------------------------------------ daemon
@app.command()
def serve(listen: Optional[str] = typer.Option(None, help="also listen on loopback TCP, e.g. 127.0.0.1:8443")):
    """Run the daemon (the single writer) on OPENVPS_HOME's socket. Instances keep running when it stops."""
    from ..config import load
    from ..daemon import serve as run_daemon
    cfg = load()
    if listen:
        cfg.listen = listen
    try:
        run_daemon(cfg)
    except OpenVPSError as e:
        fail(e.message)


# ------------------------------------------------------------------ instances
@app.command()
@handled
@with_limit_options
def create(ctid: Optional[int] = typer.Argument(None, help="numeric CTID; next free if omitted"),
           name: str = typer.Option(..., "--name", "-n", help="unique name (a DNS label)"),
           template: str = typer.Option("minimal", "--template", "-t", help="template to clone"),
           hostname: Optional[str] = typer.Option(None, help="defaults to the name"),
           ssh_key: List[Path] = typer.Option([], "--ssh-key", help="public key file for root (repeatable)"),
           userpasswd: Optional[str] = typer.Option(None, help="root:PASSWORD (only root for now)"),
           start: bool = typer.Option(False, "--start", help="start once created"),
           json_out: bool = JSON, limits: dict = None):
    """Create an instance as a copy-on-write clone of a template."""
    keys = []
    for path in ssh_key:
        try:
            keys += [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        except OSError as e:
            fail(f"cannot read ssh key file {path}: {e.strerror}")
    password = None
    if userpasswd is not None:
        user, sep, password = userpasswd.partition(":")
        if not sep or user != "root" or not password:
            fail("--userpasswd takes root:PASSWORD")
    op = client().create(name=name, template=template, ctid=ctid, hostname=hostname, limits=limits,
                         ssh_keys=keys, root_password=password, start=start)
    done = follow(op, f"creating {name}", quiet=json_out)
    inst = done["result"]["instance"]
    if json_out:
        return render.print_json(inst)
    verb = "created and started" if inst["state"] == "running" else "created"
    print(f"instance {inst['name']} (CTID {inst['ctid']}) {verb}")


def _lifecycle(action: str, ident: str, body: dict | None, json_out: bool, past: str) -> None:
    op = client().action(ident, action, body)
    done = follow(op, f"{action} {ident}", quiet=json_out)
    inst = (done.get("result") or {}).get("instance") or {}
    if json_out:
        return render.print_json(inst)
    print(f"instance {inst.get('name', ident)} {past}")


@app.command()
@handled
def start(ident: str = typer.Argument(..., help="CTID or name"), json_out: bool = JSON):
    """Start an instance."""
    _lifecycle("start", ident, None, json_out, "started")


@app.command()
@handled
def stop(ident: str = typer.Argument(..., help="CTID or name"),
         timeout: Optional[int] = typer.Option(None, help="seconds before the kill (default 60)"),
         force: bool = typer.Option(False, "--force", help="kill at once"), json_out: bool = JSON):
    """Stop: SIGRTMIN+3 for systemd, SIGTERM otherwise; killed after --timeout."""
    _lifecycle("stop", ident, {"timeout": timeout, "force": force}, json_out, "stopped")


@app.command()
@handled
def restart(ident: str = typer.Argument(..., help="CTID or name"),
            timeout: Optional[int] = typer.Option(None, help="seconds before the kill (default 60)"),
            json_out: bool = JSON):
    """Stop and start again."""
    _lifecycle("restart", ident, {"timeout": timeout}, json_out, "restarted")


@app.command()
@handled
def suspend(ident: str = typer.Argument(..., help="CTID or name"), json_out: bool = JSON):
    """Freeze every process of the instance."""
    _lifecycle("suspend", ident, None, json_out, "suspended")


@app.command()
@handled
def resume(ident: str = typer.Argument(..., help="CTID or name"), json_out: bool = JSON):
    """Thaw a suspended instance."""
    _lifecycle("resume", ident, None, json_out, "resumed")


@app.command()
@handled
def destroy(ident: str = typer.Argument(..., help="CTID or name"),
            force: bool = typer.Option(False, "--force", help="stop it first if running"), json_out: bool = JSON):
    """Destroy an instance and its files (refused while running unless --force)."""
    c = client()
    follow(c.destroy(ident, force=force), f"destroying {ident}", quiet=json_out)
    if json_out:
        return render.print_json({"destroyed": ident})
    print(f"instance {ident} destroyed")


@app.command()
@handled
def status(ident: str = typer.Argument(..., help="CTID or name"), json_out: bool = JSON):
    """Show an instance: state, limits, usage."""
    inst = client().instance(ident)
    if json_out:
        return render.print_json(inst)
    render.instance_detail(inst)


@app.command("list")
@handled
def list_(output: str = typer.Option(render.DEFAULT_COLUMNS, "-o", "--output",
                                     help=f"columns, from: {', '.join(render.COLUMNS)}"),
          sort: Optional[str] = typer.Option(None, "-s", "--sort", help="sort by a column; -col for descending"),
          json_out: bool = JSON):
    """List instances (like vzlist)."""
    items = client().instances()
    if json_out:
        return render.print_json(items)
    render.instances_table(items, output, sort)


@app.command()
@handled
@with_limit_options
def set(ident: str = typer.Argument(..., help="CTID or name"),
        hostname: Optional[str] = typer.Option(None, help="new hostname"),
        save: bool = typer.Option(False, "--save", help="persist (without it a running instance changes until restart)"),
        json_out: bool = JSON, limits: dict = None):
    """Change limits live (running instances) and with --save in the saved config, like vzctl set."""
    done = follow(client().set(ident, limits=limits, hostname=hostname, save=save), f"set {ident}", quiet=True)
    inst = done["result"]["instance"]
    if json_out:
        return render.print_json(inst)
    print(f"instance {inst['name']} updated" + (" and saved" if save else " (live only; add --save to keep)"))


@app.command(context_settings={"allow_interspersed_args": False})
@handled
def exec(ident: str = typer.Argument(..., help="CTID or name"),
         command: List[str] = typer.Argument(..., help="command and arguments (after --)"),
         tty: bool = typer.Option(False, "-t", "--tty", help="allocate a pseudo-terminal")):
    """Run a command inside a running instance; its exit code becomes ours."""
    argv = list(command)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        fail("give a command after --, e.g. openvps exec web1 -- uname -a")
    code = client().exec(ident, argv, tty=tty)
    raise typer.Exit(code)


@app.command()
@handled
def enter(ident: str = typer.Argument(..., help="CTID or name")):
    """Open an interactive root shell inside a running instance (a real pty)."""
    code = client().exec(ident, [], tty=True)
    raise typer.Exit(code)


@app.command()
@handled
def limits(json_out: bool = JSON):
    """Show the limits table: every knob, its default, range and kernel mapping."""
    table = client().limits()
    if json_out:
        return render.print_json(table)
    from ..domain.limits import LIMITS as T
    render.table(["KEY", "DEFAULT", "MIN", "LIVE", "KERNEL", "ALIAS", "HELP"],
                 [[k, T[k].render(v["default"]), T[k].render(v["minimum"]), "yes" if v["live"] else "no",
                   v["cgroup"], v["alias"], v["description"]] for k, v in table.items()])


@app.command()
@handled
def node(json_out: bool = JSON):
    """Show the node: capacity, drivers, orphans found at start-up."""
    info = client().request("GET", "/1.0/node")
    if json_out:
        return render.print_json(info)
    from ..domain.sizes import format_size
    rows = [[k, format_size(v) if k in ("ram", "swap") else ", ".join(map(str, v)) if isinstance(v, list) else str(v)]
            for k, v in info.items()]
    render.table(["", ""], rows)


# ------------------------------------------------------------------ templates
@template_app.command("build")
@handled
def template_build(name: str = typer.Argument(..., help="minimal, debian-12, ..."),
                   force: bool = typer.Option(False, "--force", help="rebuild if built"), json_out: bool = JSON):
    """Build a template (minimal: offline from busybox; debian-12: debootstrap)."""
    done = follow(client().build_template(name, force=force), f"building {name}", quiet=json_out)
    t = done["result"]["template"]
    if json_out:
        return render.print_json(t)
    from ..domain.sizes import format_size
    print(f"template {t['name']} built: {t['os']} {t['release']}, {format_size(t['size_bytes'])}")


@template_app.command("list")
@handled
def template_list(json_out: bool = JSON):
    """List built templates."""
    items = client().templates()
    if json_out:
        return render.print_json(items)
    from ..domain.sizes import format_size
    render.table(["NAME", "OS", "RELEASE", "INIT", "SIZE", "CREATED", "IN USE BY"],
                 [[t["name"], t["os"], t["release"], t["init"], format_size(t["size_bytes"]), t["created_at"][:19],
                   ", ".join(t["in_use_by"]) or "-"] for t in items])


@template_app.command("remove")
@handled
def template_remove(name: str = typer.Argument(...), json_out: bool = JSON):
    """Remove a template (refused while instances use it)."""
    follow(client().remove_template(name), f"removing {name}", quiet=True)
    if json_out:
        return render.print_json({"removed": name})
    print(f"template {name} removed")


# ------------------------------------------------------------------ accounting (cli/accounting.py)
from . import accounting as _accounting  # noqa: E402

_accounting.register(app, handled=handled, client=lambda: client(), follow=lambda *a, **k: follow(*a, **k),
                     json_opt=JSON)


def run() -> None:
    app()
