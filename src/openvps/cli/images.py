"""CLI: publish (golden images), snapshots (service/images.py), backup and restore (service/backups.py)."""
from __future__ import annotations

import os
from typing import Optional

import typer

from . import render


def register(app: typer.Typer, *, handled, client, follow, json_opt, template_app=None) -> None:
    snap_app = typer.Typer(help="Snapshots of an instance's files (consistent: frozen during the copy).",
                           no_args_is_help=True)
    app.add_typer(snap_app, name="snapshot")
    vol_app = typer.Typer(help="Named volumes: directories that outlive instances (create --volume NAME:/path).",
                          no_args_is_help=True)
    app.add_typer(vol_app, name="volume")

    @vol_app.command("list")
    @handled
    def volume_list(json_out: bool = json_opt):
        """List volumes and the instances using them."""
        items = client().volumes()
        if json_out:
            return render.print_json(items)
        from ..domain.sizes import format_size
        render.table(["NAME", "OWNER", "SIZE", "IN USE BY"],
                     [[v["name"], v["owner"], format_size(v["size_bytes"]), ", ".join(v["in_use_by"]) or "-"]
                      for v in items])

    @vol_app.command("create")
    @handled
    def volume_create(name: str = typer.Argument(...), json_out: bool = json_opt):
        """Create an empty volume (create --volume also makes a missing one)."""
        v = client().create_volume(name)
        if json_out:
            return render.print_json(v)
        print(f"volume {v['name']} created")

    @vol_app.command("delete")
    @handled
    def volume_delete(name: str = typer.Argument(...), json_out: bool = json_opt):
        """Delete a volume and its files (refused while an instance has it)."""
        client().delete_volume(name)
        if json_out:
            return render.print_json({"deleted": name})
        print(f"volume {name} deleted")

    @app.command()
    @handled
    def publish(ident: str = typer.Argument(..., help="CTID or name"),
                as_: str = typer.Option(..., "--as", help="name of the new template"),
                description: str = typer.Option("", "--description", help="free text"),
                json_out: bool = json_opt):
        """Turn an instance into a new template (golden image). A running instance is frozen only for
        the copy; ssh host keys and machine-id are removed so each new instance gets its own."""
        done = follow(client().publish(ident, as_, description), f"publishing {ident} as {as_}", quiet=json_out)
        t = done["result"]["template"]
        if json_out:
            return render.print_json(t)
        from ..domain.sizes import format_size
        print(f"template {t['name']} published from {ident} (parent {t['parent']}, "
              f"{format_size(t['size_bytes'])})")

    @snap_app.command("create")
    @handled
    def snapshot_create(ident: str = typer.Argument(..., help="CTID or name"),
                        name: str = typer.Argument(..., help="snapshot name"),
                        description: str = typer.Option("", "--description"), json_out: bool = json_opt):
        """Take a snapshot (a running instance is frozen while its files are copied)."""
        done = follow(client().create_snapshot(ident, name, description), f"snapshot {ident} {name}",
                      quiet=json_out)
        if json_out:
            return render.print_json(done["result"]["snapshot"])
        print(f"snapshot {name} of {ident} created")

    @snap_app.command("list")
    @handled
    def snapshot_list(ident: str = typer.Argument(..., help="CTID or name"), json_out: bool = json_opt):
        """List an instance's snapshots."""
        items = client().snapshots(ident)
        if json_out:
            return render.print_json(items)
        from ..domain.sizes import format_size
        render.table(["NAME", "CREATED", "STATE", "SIZE", "DESCRIPTION"],
                     [[s["name"], s["created_at"][:19], s["state"], format_size(s["size_bytes"]),
                       s.get("description") or "-"] for s in items])

    @snap_app.command("restore")
    @handled
    def snapshot_restore(ident: str = typer.Argument(..., help="CTID or name"),
                         name: str = typer.Argument(..., help="snapshot name"),
                         start: bool = typer.Option(False, "--start", help="start the instance afterwards"),
                         json_out: bool = json_opt):
        """Roll back to a snapshot, like `pct rollback`: a running instance is stopped first and stays
        stopped unless --start."""
        done = follow(client().restore_snapshot(ident, name, start), f"restoring {ident} to {name}",
                      quiet=json_out)
        if json_out:
            return render.print_json(done["result"]["instance"])
        print(f"instance {ident} rolled back to {name}" + (" and started" if start else ""))

    @snap_app.command("delete")
    @handled
    def snapshot_delete(ident: str = typer.Argument(..., help="CTID or name"),
                        name: str = typer.Argument(..., help="snapshot name"), json_out: bool = json_opt):
        """Delete a snapshot."""
        follow(client().delete_snapshot(ident, name), f"deleting snapshot {name}", quiet=True)
        if json_out:
            return render.print_json({"deleted": name})
        print(f"snapshot {name} of {ident} deleted")

    @app.command()
    @handled
    def backup(ident: str = typer.Argument(..., help="CTID or name"),
               mode: str = typer.Option("snapshot", "--mode", help="stop | suspend | snapshot (like vzdump)"),
               to: str = typer.Option(..., "--to", help="directory on the node for the archive"),
               json_out: bool = json_opt):
        """Back up an instance: one tar+zstd archive (config + its files) and ARCHIVE.sha256 beside it.
        snapshot: frozen only while its files are copied; suspend: frozen for the whole archive;
        stop: stopped for it and started again."""
        done = follow(client().backup(ident, os.path.abspath(to), mode), f"backing up {ident}", quiet=json_out)
        b = done["result"]["backup"]
        if json_out:
            return render.print_json(b)
        from ..domain.sizes import format_size
        print(f"{b['archive']} ({format_size(b['size_bytes'])}, sha256 {b['sha256'][:16]}…)")

    @app.command()
    @handled
    def restore(archive: str = typer.Argument(..., help="backup archive (ARCHIVE.sha256 must lie beside it)"),
                ctid: Optional[int] = typer.Option(None, "--ctid", help="CTID of the new instance"),
                name: Optional[str] = typer.Option(None, "--name", help="name of the new instance"),
                json_out: bool = json_opt):
        """Restore a backup as a new instance (checksum checked first; nothing is left on failure)."""
        done = follow(client().restore(os.path.abspath(archive), ctid, name), f"restoring {archive}", quiet=json_out)
        inst = done["result"]["instance"]
        if json_out:
            return render.print_json(inst)
        print(f"instance {inst['name']} (CTID {inst['ctid']}) restored")

    @app.command()
    @handled
    def rebase(ident: str = typer.Argument(..., help="CTID or name"),
               template: str = typer.Option(..., "--template", "-t", help="NAME or NAME@REVISION"),
               json_out: bool = json_opt):
        """Re-create the instance's root from a template: its own changes are dropped except its identity
        (hostname, hosts, machine-id, ssh host keys, root's authorized_keys); volumes and mounts stay. A
        running instance is stopped for it and started again."""
        done = follow(client().rebase(ident, template), f"rebasing {ident} on {template}", quiet=json_out)
        inst = done["result"]["instance"]
        if json_out:
            return render.print_json(inst)
        print(f"instance {inst['name']} rebased on {inst['template']}")

    if template_app is not None:
        @template_app.command("update")
        @handled
        def template_update(name: str = typer.Argument(..., help="template (any of its versions)"),
                            script: Optional[str] = typer.Option(None, "--script", help="file with a shell script "
                                                                 "to run instead of the OS's package upgrade"),
                            json_out: bool = json_opt):
            """Make the next version of a template: run its package upgrade (or --script) in a throwaway
            instance of the newest version and store the result as NAME.vN."""
            text = None
            if script is not None:
                try:
                    with open(script) as f:
                        text = f.read()
                except OSError as e:
                    raise ValueError(f"cannot read {script}: {e.strerror}") from None
            done = follow(client().update_template(name, text), f"updating {name}", quiet=json_out)
            t = done["result"]["template"]
            if json_out:
                return render.print_json(done["result"])
            print(f"template {t['name']} is version {t['revision']} of {t['base']} (parent {t['parent']})")

    if template_app is not None:
        @template_app.command("export")
        @handled
        def template_export(name: str = typer.Argument(...),
                            to: str = typer.Option(..., "--to", help="file to write"),
                            base: Optional[str] = typer.Option(None, "--base", help="a template the other node "
                                                               "has: write only a delta against it"),
                            json_out: bool = json_opt):
            """Export a template to one file: the whole tree (zstd), or with --base a binary delta
            (zstd --patch-from) that `template import` on the other node turns back into the exact tree."""
            done = follow(client().export_template(name, os.path.abspath(to), base), f"exporting {name}",
                          quiet=json_out)
            e = done["result"]["export"]
            if json_out:
                return render.print_json(e)
            from ..domain.sizes import format_size
            print(f"{e['file']}: {format_size(e['bytes'])} for a {format_size(e['tree_bytes'])} tree"
                  + (f" (delta against {e['base']['name']})" if e["base"] else ""))

        @template_app.command("import")
        @handled
        def template_import(file: str = typer.Argument(..., help="file from `template export`"),
                            json_out: bool = json_opt):
            """Import a template export; a delta needs its base here, and the rebuilt tree's content hash
            must match the exported one."""
            done = follow(client().import_template(os.path.abspath(file)), f"importing {file}", quiet=json_out)
            t = done["result"]["template"]
            if json_out:
                return render.print_json(t)
            print(f"template {t['name']} imported")

    @app.command()
    @handled
    def sync(ident: str = typer.Argument(..., help="CTID or name"),
             to: Optional[int] = typer.Option(None, "--to", help="template version; default the newest"),
             exclude: list[str] = typer.Option([], "--exclude", help="path inside never touched (repeatable)"),
             dry_run: bool = typer.Option(False, "--dry-run", help="only list what would change"),
             json_out: bool = json_opt):
        """Push a template update to an instance (like si_updateclient): files that changed between its
        version and the target, except excluded paths and files it changed itself (conflicts, kept)."""
        done = follow(client().sync(ident, to, list(exclude), dry_run), f"sync {ident}", quiet=json_out)
        r = done["result"]["sync"]
        if json_out:
            return render.print_json(r)
        print(f"{ident}: {r['from']} -> {r['to']}" + (" (dry run)" if dry_run else ""))
        for key, word in (("updated", "would update" if dry_run else "updated"), ("excluded", "excluded"),
                          ("conflicts", "conflict (kept)")):
            for e in r[key]:
                print(f"  {word:16} {e['change']:9} {e['path']}")
