"""CLI: beancounters, events, node capacity, split (thin over the accounting routes)."""
from __future__ import annotations

import sys
from typing import Optional
from urllib.parse import quote

import typer

from ..domain import accounting as A
from ..domain.sizes import format_size
from . import render


def _rows(table: dict) -> list[A.Row]:
    return [A.Row(**r) for r in table["rows"]]


def register(app: typer.Typer, *, handled, client, follow, json_opt) -> None:
    """Add the accounting commands to the main app; `node` becomes a group (`node` alone still shows
    the node, `node capacity` the overcommit accounting)."""

    @app.command()
    @handled
    def beancounters(ident: Optional[str] = typer.Argument(None, help="CTID or name"),
                     all_: bool = typer.Option(False, "--all", "-a", help="every running instance"),
                     reset: bool = typer.Option(False, "--reset", help="zero maxheld and failcnt where the kernel allows"),
                     json_out: bool = json_opt):
        """OpenVZ /proc/user_beancounters-style counters: held, maxheld, barrier, limit, failcnt
        (physpages and swappages in 4 KiB pages, kmemsize in bytes; 9223372036854775807 = unlimited)."""
        c = client()
        if all_ == (ident is not None):
            raise ValueError("give an instance (CTID or name) or --all")
        if reset:
            if all_:
                raise ValueError("--reset works on one instance: openvps beancounters CT --reset")
            done = follow(c.request("POST", f"/1.0/instances/{quote(ident)}/beancounters/reset"),
                          f"resetting {ident}", quiet=True)
            res = done["result"]
            if json_out:
                return render.print_json(res)
            sys.stdout.write(A.render_table([(res["beancounters"]["ctid"], _rows(res["beancounters"]))]))
            sys.stderr.write(f"reset: {', '.join(res['reset']) or 'nothing'}; not resettable: "
                             f"{', '.join(res['not_resettable'])}\n")
            return
        tables = c.request("GET", "/1.0/beancounters") if all_ else [
            c.request("GET", f"/1.0/instances/{quote(ident)}/beancounters")]
        if json_out:
            return render.print_json(tables if all_ else tables[0])
        sys.stdout.write(A.render_table([(t["ctid"], _rows(t)) for t in tables if t["rows"]]))
        for t in tables:
            if not t["rows"]:
                sys.stderr.write(f"instance {t['name']} is {t['state']}: no counters until it runs\n")

    @app.command()
    @handled
    def events(ident: Optional[str] = typer.Argument(None, help="CTID or name (all instances if omitted)"),
               limit: int = typer.Option(50, "--limit", "-n", help="at most this many, newest first"),
               json_out: bool = json_opt):
        """Limit hits and OOM kills, with the killed process and what to do."""
        path = f"/1.0/instances/{quote(ident)}/events" if ident else "/1.0/limit-events"
        items = client().request("GET", path, query={"limit": limit})
        if json_out:
            return render.print_json(items)
        if not items:
            print("no events")
            return
        render.table(["TIME", "CTID", "NAME", "RESOURCE", "WHAT", "ADVICE"],
                     [[e["time"][:19], str(e["ctid"]), e["instance"], e["resource"], e["message"], e["advice"]]
                      for e in items])

    @app.command()
    @handled
    def split(n: int = typer.Argument(..., help="number of equal instances"), json_out: bool = json_opt):
        """Sizes of N equal instances that fill this node (like vzsplit)."""
        s = client().request("GET", "/1.0/node/split", query={"n": n})
        if json_out:
            return render.print_json(s)
        render.table(["", ""], [
            ["instances", str(s["instances"])], ["ram", format_size(s["ram"])], ["swap", format_size(s["swap"])],
            ["guarantee", format_size(s["guarantee"])], ["cpuguarantee", f"{s['cpuguarantee']}%"],
            ["pids", str(s["pids"])], ["node reserve", format_size(s["node_reserve"])]])
        print(f"openvps create --name NAME --ram {format_size(s['ram'])} --swap {format_size(s['swap'])} "
              f"--cpuguarantee {s['cpuguarantee']} --pids {s['pids']}")

    # `node` becomes a group: the old command is its default, `capacity` a subcommand
    old = next((c for c in app.registered_commands if (c.name or c.callback.__name__) == "node"), None)
    if old is None:
        return
    app.registered_commands.remove(old)
    node_app = typer.Typer(help="The node: capacity, drivers, orphans; `node capacity` for overcommit accounting.")

    @node_app.callback(invoke_without_command=True)
    def node(ctx: typer.Context, json_out: bool = json_opt):
        """Show the node: capacity, drivers, orphans found at start-up."""
        if ctx.invoked_subcommand is None:
            old.callback(json_out=json_out)

    @node_app.command("capacity")
    @handled
    def capacity(json_out: bool = json_opt):
        """Overcommit accounting: RAM and swap, sums of guarantees and limits, what is free to promise."""
        cap = client().request("GET", "/1.0/node/capacity")
        if json_out:
            return render.print_json(cap)
        total = cap["ram"] + cap["swap"]
        render.table(["", ""], [
            ["node ram", format_size(cap["ram"])], ["node swap", format_size(cap["swap"])],
            ["overcommit ratio", str(cap["overcommit_ratio"])],
            ["may promise", format_size(cap["promisable"])],
            ["instances", str(cap["instances"])],
            ["guarantees", f"{format_size(cap['guarantees'])} ({cap['guarantee_ratio']:.0%} of RAM+swap)"],
            ["limits", f"{format_size(cap['limits'])} ({cap['limit_ratio']:.0%} of RAM+swap"
                       f"{', overcommitted' if cap['limits'] > total else ''})"],
            ["free to promise", format_size(cap["free_to_promise"])]])

    app.add_typer(node_app, name="node")
