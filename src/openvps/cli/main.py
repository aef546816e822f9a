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
                  "Instances are named by CTID or name everywhere. Talks to the daemon over "
                  "$OPENVPS_HOME/openvps.sock (as admin), or over TCP with OPENVPS_URL + OPENVPS_TOKEN "
                  "(and OPENVPS_CACERT for https).", no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]}, pretty_exceptions_enable=False)
template_app = typer.Typer(help="Build, list and remove OS templates.", no_args_is_help=True)
app.add_typer(template_app, name="template")
user_app = typer.Typer(help="Users and their quotas (admins only).", no_args_is_help=True)
app.add_typer(user_app, name="user")
token_app = typer.Typer(help="API tokens for TCP access (OPENVPS_URL + OPENVPS_TOKEN).", no_args_is_help=True)
app.add_typer(token_app, name="token")

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
def serve(listen: Optional[str] = typer.Option(None, help="also listen on TCP, e.g. 127.0.0.1:8443; every request "
                                               "needs a bearer token; beyond loopback only with tls_cert/tls_key")):
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
           privileged: bool = typer.Option(False, "--privileged",
                                           help="UNSAFE: no user namespace; root inside is root on the node"),
           net: List[str] = typer.Option([], "--net", help="network to join (repeatable: eth0, eth1, ...); "
                                         "default: the network 'default'", rich_help_panel="Network"),
           ipadd: List[str] = typer.Option([], "--ipadd", help="given address (repeatable); else the next free one",
                                           rich_help_panel="Network"),
           nameserver: List[str] = typer.Option([], "--nameserver", help="for /etc/resolv.conf (repeatable)",
                                                rich_help_panel="Network"),
           searchdomain: Optional[str] = typer.Option(None, "--searchdomain", help="for /etc/resolv.conf",
                                                      rich_help_panel="Network"),
           tag: List[str] = typer.Option([], "--tag", help="key=value label (repeatable)"),
           description: str = typer.Option("", "--description", help="free text"),
           volume: List[str] = typer.Option([], "--volume", help="named volume NAME:/path[:ro] (made if missing; "
                                            "outlives the instance; repeatable)", rich_help_panel="Data"),
           mount: List[str] = typer.Option([], "--mount", help="node directory /node/dir:/path[:ro] (admins; "
                                           "repeatable)", rich_help_panel="Data"),
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
    netargs = {k: v for k, v in {"nets": list(net), "ipadd": list(ipadd), "nameservers": list(nameserver),
                                 "searchdomain": searchdomain}.items() if v}
    op = client().create(name=name, template=template, ctid=ctid, hostname=hostname, limits=limits,
                         ssh_keys=keys, root_password=password, start=start, privileged=privileged, **netargs,
                         **({"tags": _tags(tag)} if tag else {}),
                         **({"volumes": list(volume)} if volume else {}), **({"mounts": list(mount)} if mount else {}),
                         **({"description": description} if description else {}))
    done = follow(op, f"creating {name}", quiet=json_out)
    inst = done["result"]["instance"]
    if json_out:
        return render.print_json(inst)
    verb = "created and started" if inst["state"] == "running" else "created"
    print(f"instance {inst['name']} (CTID {inst['ctid']}) {verb}")


def _tags(items: List[str]) -> dict:
    out = {}
    for t in items:
        k, sep, v = t.partition("=")
        if not sep or not k:
            fail(f"--tag {t!r}: write it as key=value")
        out[k] = v
    return out


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
          state: Optional[str] = typer.Option(None, "--state", help="only this state, e.g. running"),
          template: Optional[str] = typer.Option(None, "--template", help="only this template"),
          name_prefix: Optional[str] = typer.Option(None, "--name-prefix", help="names starting with this"),
          owner: Optional[str] = typer.Option(None, "--owner", help="only this owner (admins)"),
          tag: List[str] = typer.Option([], "--tag", help="key=value (repeatable: all must match)"),
          json_out: bool = JSON):
    """List instances (like vzlist); filters run on the daemon, pages are walked for you."""
    filters = {k: v for k, v in {"state": state, "template": template, "name_prefix": name_prefix, "owner": owner,
                                 "tag": list(tag)}.items() if v}
    items = client().instances(**filters)
    if json_out:
        return render.print_json(items)
    render.instances_table(items, output, sort)


@app.command()
@handled
@with_limit_options
def set(ident: str = typer.Argument(..., help="CTID or name"),
        hostname: Optional[str] = typer.Option(None, help="new hostname"),
        save: bool = typer.Option(False, "--save", help="persist (without it a running instance changes until restart)"),
        ipadd: List[str] = typer.Option([], "--ipadd", help="add an address (repeatable; always saved)",
                                        rich_help_panel="Network"),
        ipdel: List[str] = typer.Option([], "--ipdel", help="remove an address (repeatable)", rich_help_panel="Network"),
        nameserver: List[str] = typer.Option([], "--nameserver", help="replace the nameservers (repeatable)",
                                             rich_help_panel="Network"),
        searchdomain: Optional[str] = typer.Option(None, "--searchdomain", help="replace the search domain",
                                                   rich_help_panel="Network"),
        tag: List[str] = typer.Option([], "--tag", help="add or change a key=value tag (repeatable; always saved)"),
        untag: List[str] = typer.Option([], "--untag", help="remove a tag by key (repeatable)"),
        description: Optional[str] = typer.Option(None, "--description", help="new description (always saved)"),
        json_out: bool = JSON, limits: dict = None):
    """Change limits live (running instances) and with --save in the saved config, like vzctl set.
    Addresses and DNS (--ipadd/--ipdel/--nameserver/--searchdomain), tags and the description are
    always saved (and addresses applied live)."""
    body = {"limits": limits, "hostname": hostname, "save": save}
    if ipadd or ipdel or nameserver or searchdomain is not None:
        body.update(ipadd=list(ipadd), ipdel=list(ipdel), nameservers=list(nameserver) or None,
                    searchdomain=searchdomain)
    body.update({k: v for k, v in {"tags": _tags(tag) if tag else None, "untag": list(untag),
                                   "description": description}.items() if v or (k == "description" and v is not None)})
    done = follow(client().set(ident, **body), f"set {ident}", quiet=True)
    inst = done["result"]["instance"]
    if json_out:
        return render.print_json(inst)
    if not limits and hostname is None:
        return print(f"instance {inst['name']} updated" + (f": {', '.join(inst.get('ip') or [])}"
                                                           if ipadd or ipdel else ""))
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
def template_list(versions: bool = typer.Option(False, "--versions", help="group by template: every version, "
                                                "its revision and parent"), json_out: bool = JSON):
    """List built templates."""
    items = client().templates()
    if versions:
        items = sorted(items, key=lambda t: (t.get("base") or t["name"], t.get("revision", 1)))
    if json_out:
        return render.print_json(items)
    from ..domain.sizes import format_size
    if versions:
        return render.table(["TEMPLATE", "VERSION", "NAME", "PARENT", "SIZE", "CREATED", "IN USE BY"],
                            [[t.get("base") or t["name"], str(t.get("revision", 1)), t["name"], t.get("parent") or "-",
                              format_size(t["size_bytes"]), t["created_at"][:19], ", ".join(t["in_use_by"]) or "-"]
                             for t in items])
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


# ------------------------------------------------------------------ networking (cli/network.py)
from . import network as _network  # noqa: E402
_network.register(app)


# ------------------------------------------------------------------ EC2 access keys (cli/keys.py)
from . import keys as _keys  # noqa: E402
_keys.register(user_app)


# ------------------------------------------------------------------ users and tokens
def _quota_row(u: dict) -> list[str]:
    from ..domain.sizes import format_size
    q = u["quotas"]
    return [u["name"], "yes" if u["admin"] else "no", "-" if q["max_instances"] is None else str(q["max_instances"]),
            "-" if q["max_ram"] is None else format_size(q["max_ram"]),
            "-" if q["max_public_ips"] is None else str(q["max_public_ips"])]


@user_app.command("create")
@handled
def user_create(name: str = typer.Argument(..., help="a DNS label, e.g. alice"),
                admin: bool = typer.Option(False, "--admin", help="may see and change everything"),
                max_instances: Optional[int] = typer.Option(None, help="quota: instances"),
                max_ram: Optional[str] = typer.Option(None, help="quota: total RAM, e.g. 8G"),
                max_public_ips: Optional[int] = typer.Option(None, help="quota: public addresses"),
                password: bool = typer.Option(False, "--password", help="also set its dashboard password "
                                              "(asked for, or one line on stdin)"),
                json_out: bool = JSON):
    """Create a user (then `openvps token create NAME` for its API token)."""
    quotas = {k: v for k, v in {"max_instances": max_instances, "max_ram": max_ram,
                                "max_public_ips": max_public_ips}.items() if v is not None}
    secret = _web.read_password() if password else None
    u = client().create_user(name, admin=admin, quotas=quotas)
    if secret is not None:
        client().set_password(name, secret)
    if json_out:
        return render.print_json(u)
    print(f"user {u['name']} created")


@user_app.command("list")
@handled
def user_list(json_out: bool = JSON):
    """List users and their quotas ('-' = no limit)."""
    users = client().users()
    if json_out:
        return render.print_json(users)
    render.table(["NAME", "ADMIN", "MAX INSTANCES", "MAX RAM", "MAX PUBLIC IPS"], [_quota_row(u) for u in users])


@user_app.command("set")
@handled
def user_set(name: str = typer.Argument(...),
             max_instances: Optional[int] = typer.Option(None, help="quota: instances (-1: no limit)"),
             max_ram: Optional[str] = typer.Option(None, help="quota: total RAM, e.g. 8G ('none': no limit)"),
             max_public_ips: Optional[int] = typer.Option(None, help="quota: public addresses (-1: no limit)"),
             json_out: bool = JSON):
    """Change a user's quotas."""
    q: dict = {}
    if max_instances is not None:
        q["max_instances"] = None if max_instances < 0 else max_instances
    if max_ram is not None:
        q["max_ram"] = None if max_ram.lower() == "none" else max_ram
    if max_public_ips is not None:
        q["max_public_ips"] = None if max_public_ips < 0 else max_public_ips
    u = client().update_user(name, quotas=q)
    if json_out:
        return render.print_json(u)
    print(f"user {u['name']} updated")


@user_app.command("delete")
@handled
def user_delete(name: str = typer.Argument(...), json_out: bool = JSON):
    """Delete a user and its tokens (refused while it owns instances)."""
    client().delete_user(name)
    if json_out:
        return render.print_json({"deleted": name})
    print(f"user {name} deleted")


@token_app.command("create")
@handled
def token_create(user: Optional[str] = typer.Argument(None, help="whose token (default: yourself)"),
                 description: str = typer.Option("", "--description", help="what it is for"),
                 json_out: bool = JSON):
    """Create an API token. The secret is printed ONCE: only its hash is stored."""
    t = client().create_token(user, description)
    if json_out:
        return render.print_json(t)
    sys.stderr.write(f"token {t['id']} for {t['user']} (shown once; use it as OPENVPS_TOKEN):\n")
    print(t["token"])


@token_app.command("list")
@handled
def token_list(user: Optional[str] = typer.Option(None, "--user", help="only this user's"), json_out: bool = JSON):
    """List tokens (id, user, visible prefix; never the secret)."""
    items = client().tokens(user)
    if json_out:
        return render.print_json(items)
    render.table(["ID", "USER", "PREFIX", "DESCRIPTION", "CREATED"],
                 [[t["id"], t["user"], t["prefix"] + "…", t["description"] or "-", (t["created_at"] or "-")[:19]]
                  for t in items])


@token_app.command("revoke")
@handled
def token_revoke(token_id: str = typer.Argument(..., help="token id from `openvps token list`"),
                 json_out: bool = JSON):
    """Revoke a token: requests with it fail with 401 from now on."""
    client().revoke_token(token_id)
    if json_out:
        return render.print_json({"revoked": token_id})
    print(f"token {token_id} revoked")


# ------------------------------------------------------------------ accounting (cli/accounting.py)
from . import accounting as _accounting  # noqa: E402

_accounting.register(app, handled=handled, client=lambda: client(), follow=lambda *a, **k: follow(*a, **k),
                     json_opt=JSON)

from . import web as _web  # noqa: E402  (user passwd: the dashboard's password)


# ------------------------------------------------------------------ images (cli/images.py)
from . import images as _images  # noqa: E402

_images.register(app, handled=handled, client=lambda: client(), follow=lambda *a, **k: follow(*a, **k),
                 json_opt=JSON, template_app=template_app)


def run() -> None:
    app()
