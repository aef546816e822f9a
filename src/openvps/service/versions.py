"""Template versions and sync (SystemImager's updateclient).

A template's first version is the template itself (revision 1); `template update NAME` runs a script in
a throwaway instance of the newest version and stores the result as template NAME.vN (revision N,
base NAME, parent NAME@N-1). Instances remember the version they run on by its template name.

`sync CT` moves an instance to another version of its template by switching its overlay's lower
layer: files the instance never touched follow the new version at once. Files the instance changed
itself live in its upper layer and stay as they are (conflicts, listed). For excluded paths the old
version's state is pinned into the upper (a copy of the old file, or a whiteout for a file the new
version adds), so they do not change either."""
from __future__ import annotations

import os
import secrets
import subprocess

from ..domain.errors import Conflict, InvalidArgument, NotFound, OpenVPSError
from ..domain.instance import State
from ..drivers import layers
from ..drivers.templates import base as tbase
from ..drivers.templates import setup as tsetup
from .images import KEEP, ImageService, idmap_of, still, template_manifest
from .node import Node
from .ops import Operation, Progress, Reverter
from .users import ROOT, Actor
from .views import instance_view

DEFAULT_SCRIPTS = {
    # Debian-based: upgrade from the mirror in the template's apt sources
    "debian": "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get -y -o Dpkg::Options::=--force-confold upgrade"
              " && apt-get clean",
    "ubuntu": "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get -y -o Dpkg::Options::=--force-confold upgrade"
              " && apt-get clean",
    "busybox": "cp /bin/busybox /bin/busybox.new && mv /bin/busybox.new /bin/busybox",   # fresh copy, nothing else
}


class VersionService:
    def __init__(self, node: Node):
        self.node = node
        self.images = ImageService(node)

    # ------------------------------------------------------------------ queries
    def family(self, name: str) -> list[tbase.Manifest]:
        """Every version of the template `name` belongs to, oldest first."""
        m = self._manifest(name)
        base = m.base or m.name
        return sorted((t for t in self.node.templates.list() if (t.base or t.name) == base), key=lambda t: t.revision)

    def _manifest(self, name: str) -> tbase.Manifest:
        return template_manifest(self.node, name)

    def version(self, name: str, revision: int | None) -> tbase.Manifest:
        fam = self.family(name)
        if revision is None:
            return fam[-1]
        for m in fam:
            if m.revision == revision:
                return m
        raise NotFound(f"template {fam[0].name} has no version {revision} (has "
                       f"{', '.join(str(m.revision) for m in fam)})", template=name)

    # ------------------------------------------------------------------ update
    def update(self, name: str, script: str | None = None) -> dict:
        latest = self.family(name)[-1]
        base = latest.base or latest.name
        script = script if script is not None else DEFAULT_SCRIPTS.get(latest.os)
        if not script or not isinstance(script, str) or "\0" in script:
            raise InvalidArgument(f"no update script for {latest.os} templates; pass one (--script FILE)",
                                  field="script")
        new_name = f"{base}.v{latest.revision + 1}"
        try:
            tbase.validate_name(new_name)
        except tbase.InvalidTemplateName:
            raise InvalidArgument(f"{base}: name too long for versions") from None
        op = Operation("template.update", base, {"from": latest.name, "to": new_name}, lock=f"template:{base}")
        return self.node.runner.submit(op, lambda o, p: self._do_update(latest, new_name, script, p))

    def _do_update(self, latest: tbase.Manifest, new_name: str, script: str, p: Progress) -> dict:
        inst = self.images.instances
        if self.node.templates.get(new_name) is not None:
            raise Conflict(f"template {new_name} exists already")
        p(0.05, f"throwaway instance of {latest.name}")
        op = inst.create(name=f"tpl-update-{secrets.token_hex(4)}", template=latest.name, start=True, actor=ROOT)
        done = self.node.runner.wait(op["id"], timeout=600)
        if done["status"] != "success":
            raise OpenVPSError(f"could not start a throwaway instance: {(done.get('error') or {}).get('message')}")
        ctid = done["result"]["instance"]["ctid"]
        with Reverter() as undo:
            undo.add("remove the throwaway instance", lambda: self._forget(ctid))
            p(0.2, "running the update script")
            proc = self.node.runtime.exec(self.node.cid(ctid), ["/bin/sh", "-c", script], tty=False,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                out, _ = proc.communicate(timeout=3600)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            if proc.returncode != 0:
                raise OpenVPSError(f"the update script failed (exit {proc.returncode}): "
                                   f"{out.decode(errors='replace')[-1500:]}")
            inst._stop(ctid, self.node.config.stop_timeout, False, p)
            row = self.node.store.get_instance(ctid)
            lower = self.node.templates.rootfs(latest.name)

            def fill(rootfs):
                p(0.6, "storing the new version")
                layers.copy_tree(lower, rootfs)
                with still(self.node, row) as upper:
                    b, size = idmap_of(self.node, row) or (0, 0)
                    # the throwaway's own identity (hostname, keys, resolv.conf) is not part of the version
                    layers.apply_upper(upper, rootfs, base=b, size=size, delta=-b, skip=KEEP)
                tsetup.clean_identity(rootfs)

            import dataclasses
            m = dataclasses.replace(latest, parent=f"{latest.name}@{latest.revision}", revision=latest.revision + 1,
                                    base=latest.base or latest.name, description=f"update of {latest.name}")
            try:
                m = self.node.templates.add(new_name, fill, m, p)
            except FileExistsError:
                raise Conflict(f"template {new_name} exists already") from None
        self._forget(ctid)
        from .templates import TemplateService
        return {"template": TemplateService(self.node).view(m), "log": out.decode(errors="replace")[-4000:]}

    def _forget(self, ctid: int) -> None:
        from .backups import BackupService
        if self.node.store.find_instance(ctid) is None:
            return
        self.images.instances._stop(ctid, 0, True)
        BackupService(self.node)._forget(ctid)

    # ------------------------------------------------------------------ sync
    def sync(self, ident, *, to: int | None = None, exclude: list[str] | None = None, dry_run: bool = False,
             actor: Actor | None = None) -> dict:
        row = self.images._row(ident, actor)
        current = self._manifest(row["template"])
        target = self.version(row["template"], to)
        excl = []
        for e in exclude or []:
            if not isinstance(e, str) or not e.startswith("/") or ".." in e.split("/"):
                raise InvalidArgument(f"--exclude {e!r}: an absolute path inside, without '..'", field="exclude")
            excl.append(os.path.normpath(e).lstrip("/"))
        if row["state"] not in (State.STOPPED, State.RUNNING, State.SUSPENDED):
            raise InvalidArgument(f"cannot sync instance {row['name']}: it is {row['state']}")
        op = Operation("instance.sync", row["name"], {"ctid": row["ctid"], "to": target.name, "dry_run": dry_run,
                                                      "exclude": excl},
                       lock=f"instance:{row['ctid']}", owner=row.get("owner") or "admin")
        return self.node.runner.submit(op, lambda o, p: self._do_sync(row["ctid"], current, target, excl, dry_run, p))

    def _do_sync(self, ctid: int, current: tbase.Manifest, target: tbase.Manifest, excl: list[str],
                 dry_run: bool, p: Progress) -> dict:
        cur = self.node.store.get_instance(ctid)
        old_lower, new_lower = self.node.templates.rootfs(current.name), self.node.templates.rootfs(target.name)
        p(0.1, f"comparing {current.name} and {target.name}")
        changes = layers.diff_trees(old_lower, new_lower) if current.name != target.name else []
        was = State(cur["state"])
        plan = {"updated": [], "excluded": [], "conflicts": []}
        stopped = False
        try:
            if not dry_run and changes and was != State.STOPPED:
                p(0.2, "stopping")
                self.images.instances._stop(ctid, self.node.config.stop_timeout, False, p)
                cur, stopped = self.node.store.get_instance(ctid), True
            with still(self.node, cur) as upper:
                b, size = idmap_of(self.node, cur) or (0, 0)
                for rel, kind in changes:
                    entry = {"path": "/" + rel, "change": kind}
                    if any(rel == e or rel.startswith(e + "/") for e in excl):
                        plan["excluded"].append(entry)
                        if not dry_run:        # pin the old version's state in the instance's own layer
                            if kind == "added":
                                layers.whiteout(upper, rel, old_lower, size=size or (1 << 32), delta=b)
                            elif not _in_upper(upper, rel):
                                layers.copy_into(old_lower, rel, upper, size=size or (1 << 32), delta=b)
                    elif _in_upper(upper, rel):
                        plan["conflicts"].append(entry)   # the instance's own change wins, kept as it is
                    else:
                        plan["updated"].append(entry)
            if not dry_run and current.name != target.name:
                self.node.store.update_instance(ctid, template=target.name, init=target.init,
                                                stop_signal=target.stop_signal)
                self.node.event("instance.synced", cur, template=target.name, previous=current.name)
        finally:
            if stopped:
                p(0.9, "starting")
                self.images.instances._start(ctid)
        return {"sync": {"from": f"{current.name}@{current.revision}", "to": f"{target.name}@{target.revision}",
                         "dry_run": dry_run, **plan},
                "instance": instance_view(self.node, self.node.store.get_instance(ctid))}


def _in_upper(upper, rel: str) -> bool:
    """Whether the instance changed rel itself: it (or a parent replaced by a file/whiteout/opaque dir)
    is in its own layer."""
    path = upper
    parts = rel.split("/")
    for i, part in enumerate(parts):
        path = path / part
        if not os.path.lexists(path):
            return False
        if i < len(parts) - 1 and (not path.is_dir() or path.is_symlink() or layers._is_opaque(str(path))):
            return True
    return True
