"""Images: publish an instance as a template (golden image) and snapshots of an instance's own layer.

Consistency: a running instance is frozen (cgroup freezer, `runc pause`) only while its upper dir is
copied, then thawed; a suspended one stays frozen; a stopped one has its layer mounted for the copy."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import re
import secrets
import shutil
from pathlib import Path

from ..domain.errors import Conflict, InvalidArgument, InvalidState, NotFound
from ..domain.instance import State
from ..drivers import layers
from ..drivers.templates import base as tbase
from ..drivers.templates import setup as tsetup
from ..drivers.templates.cache import remove_tree
from .instances import InstanceService
from .node import Node
from .ops import Operation, Progress
from .users import ROOT, Actor
from .views import instance_view

SNAP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
SNAP_META = "snapshot.json"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@contextlib.contextmanager
def still(node: Node, row: dict):
    """Yield the instance's upper dir while nothing writes to it (see the module doc)."""
    ctid, state = row["ctid"], State(row["state"])
    bundle, cid = node.bundle(ctid), node.cid(ctid)
    if state not in (State.RUNNING, State.SUSPENDED, State.STOPPED):
        raise InvalidState(f"instance {row['name']} is {state.value}; wait for it to settle", state=state.value)
    if state == State.RUNNING:
        node.runtime.pause(cid)
        try:
            yield node.storage.upper_dir(bundle)
        finally:
            node.runtime.resume(cid)
    elif state == State.SUSPENDED:
        yield node.storage.upper_dir(bundle)
    else:                              # stopped: only the layer, never the overlay (restore swaps upper)
        node.storage.open_layer(bundle)
        try:
            yield node.storage.upper_dir(bundle)
        finally:
            node.storage.unmount(bundle)


def idmap_of(node: Node, row: dict) -> tuple[int, int] | None:
    return None if row["privileged"] or row["uid_base"] is None else (row["uid_base"], node.config.idmap_size)



def template_manifest(node, name: str, field: str = "template") -> tbase.Manifest:
    """The template's manifest, or the 4xx a user should see for a bad or unknown name."""
    try:
        m = node.templates.get(name)
    except tbase.InvalidTemplateName as e:
        raise InvalidArgument(str(e), field=field) from None
    if m is None:
        raise NotFound(f"no template {name!r}; `openvps template list` shows them", template=name)
    return m

class ImageService:
    def __init__(self, node: Node):
        self.node = node
        self.store = node.store
        self.instances = InstanceService(node)

    def _row(self, ident, actor: Actor | None) -> dict:
        return self.instances._row(ident, actor or ROOT)

    def _op(self, kind: str, row: dict, args: dict) -> Operation:
        return Operation(kind=kind, target=row["name"], args={"ctid": row["ctid"], **args},
                         lock=f"instance:{row['ctid']}", owner=row.get("owner") or "admin")

    # ------------------------------------------------------------------ publish
    def publish(self, ident, name: str, *, description: str = "", actor=None) -> dict:
        """Turn an instance (template + its changes) into a new template `name`; 202 operation."""
        actor = actor or ROOT
        row = self._row(ident, actor)
        try:
            tbase.validate_name(name)
        except tbase.InvalidTemplateName as e:
            raise InvalidArgument(str(e), field="name") from None
        if not isinstance(description, str) or len(description) > 1024 or "\0" in description:
            raise InvalidArgument("description: at most 1024 characters", field="description")
        if self.node.templates.get(name) is not None:
            raise Conflict(f"template {name!r} exists; pick another name or remove it first", template=name)
        if name in tbase.BUILDERS:
            raise InvalidArgument(f"{name!r} is the name of a buildable template; pick another name", field="name")
        if row["state"] not in (State.STOPPED, State.RUNNING, State.SUSPENDED):
            raise InvalidState(f"cannot publish instance {row['name']}: it is {row['state']}", state=row["state"])
        op = self._op("instance.publish", row, {"template": name})

        def run(o: Operation, p: Progress) -> dict:
            cur = self.store.get_instance(o.args["ctid"])
            parent = self.node.templates.get(cur["template"])
            if parent is None:
                raise NotFound(f"template {cur['template']!r} of instance {cur['name']} is gone")
            lower = self.node.templates.rootfs(cur["template"])
            idmap = idmap_of(self.node, cur)

            def fill(rootfs: Path) -> None:
                p(0.1, f"copying template {parent.name}")
                layers.copy_tree(lower, rootfs)          # before the freeze: the template never changes
                p(0.5, "copying the instance's changes" + (" (frozen)" if cur["state"] == State.RUNNING else ""))
                with still(self.node, cur) as upper:
                    base, size = idmap or (0, 0)
                    layers.apply_upper(upper, rootfs, base=base, size=size, delta=-base)
                tsetup.clean_identity(rootfs)

            manifest = dataclasses.replace(parent, parent=f"{parent.name}@{parent.revision}", revision=1,
                                           owner=actor.name, description=description, builder="publish")
            try:
                m = self.node.templates.add(name, fill, manifest, p)
            except FileExistsError:
                raise Conflict(f"template {name!r} exists; pick another name", template=name) from None
            self.node.event("template.published", cur, template=name)
            from .templates import TemplateService
            return {"template": TemplateService(self.node).view(m)}
        return self.node.runner.submit(op, run)

    # ------------------------------------------------------------------ snapshots
    def _snapdir(self, ctid: int) -> Path:
        return self.node.bundle(ctid) / "snapshots"

    @staticmethod
    def _check_snap(name: str) -> str:
        if not isinstance(name, str) or not SNAP_RE.match(name):
            raise InvalidArgument(f"invalid snapshot name {name!r}: 1-63 of A-Z a-z 0-9 . _ -, starting with a "
                                  "letter or digit", field="name")
        return name

    def snapshots(self, ident, actor=None) -> list[dict]:
        row = self._row(ident, actor)
        out = []
        d = self._snapdir(row["ctid"])
        for entry in sorted(os.listdir(d)) if d.is_dir() else []:
            try:
                out.append(json.loads((d / entry / SNAP_META).read_text()))
            except (OSError, ValueError):
                continue                 # a half-made one (crash): not a snapshot
        return sorted(out, key=lambda s: s["created_at"])

    def _snapshot(self, row: dict, name: str) -> dict:
        for s in self.snapshots(row["ctid"]):
            if s["name"] == name:
                return s
        raise NotFound(f"instance {row['name']} has no snapshot {name!r}; `openvps snapshot list "
                       f"{row['name']}` shows them", snapshot=name)

    def create_snapshot(self, ident, name: str, *, description: str = "", actor=None) -> dict:
        row = self._row(ident, actor)
        self._check_snap(name)
        if any(s["name"] == name for s in self.snapshots(row["ctid"])):
            raise Conflict(f"instance {row['name']} already has a snapshot {name!r}", snapshot=name)
        op = self._op("snapshot.create", row, {"snapshot": name})

        def run(o: Operation, p: Progress) -> dict:
            cur = self.store.get_instance(o.args["ctid"])
            d = self._snapdir(cur["ctid"])
            d.mkdir(mode=0o700, exist_ok=True)
            final = d / name
            if final.exists():
                raise Conflict(f"instance {cur['name']} already has a snapshot {name!r}", snapshot=name)
            work = d / f".new-{name}-{secrets.token_hex(4)}"
            work.mkdir(mode=0o700)
            try:
                p(0.2, "copying the instance's layer" + (" (frozen)" if cur["state"] == State.RUNNING else ""))
                with still(self.node, cur) as upper:
                    layers.copy_tree(upper, work / "upper")
                meta = {"name": name, "instance": cur["name"], "ctid": cur["ctid"], "created_at": _now(),
                        "state": cur["state"], "template": cur["template"], "description": description,
                        "hostname": cur["hostname"], "limits": cur["limits"],
                        "size_bytes": layers.tree_size(work / "upper")}
                (work / SNAP_META).write_text(json.dumps(meta, indent=2) + "\n")
                os.rename(work, final)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
            self.node.event("instance.snapshot", cur, snapshot=name, action="create")
            return {"snapshot": meta}
        return self.node.runner.submit(op, run)

    def delete_snapshot(self, ident, name: str, *, actor=None) -> dict:
        row = self._row(ident, actor)
        self._snapshot(row, self._check_snap(name))
        op = self._op("snapshot.delete", row, {"snapshot": name})

        def run(o: Operation, p: Progress) -> dict:
            cur = self.store.get_instance(o.args["ctid"])
            path = self._snapdir(cur["ctid"]) / name
            trash = path.with_name(f".del-{name}-{secrets.token_hex(4)}")
            os.rename(path, trash)              # gone at once; the removal may take a while
            remove_tree(trash)
            self.node.event("instance.snapshot", cur, snapshot=name, action="delete")
            return {}
        return self.node.runner.submit(op, run)

    def restore_snapshot(self, ident, name: str, *, start: bool = False, actor=None) -> dict:
        """Like Proxmox `pct rollback`: a running instance is stopped first; --start starts it after."""
        row = self._row(ident, actor)
        snap = self._snapshot(row, self._check_snap(name))
        if snap["template"] != row["template"]:
            raise Conflict(f"snapshot {name!r} was taken on template {snap['template']!r}, the instance now "
                           f"uses {row['template']!r}", snapshot=name)
        if row["state"] not in (State.STOPPED, State.RUNNING, State.SUSPENDED):
            raise InvalidState(f"cannot restore instance {row['name']}: it is {row['state']}", state=row["state"])
        op = self._op("snapshot.restore", row, {"snapshot": name, "start": start})

        def run(o: Operation, p: Progress) -> dict:
            ctid = o.args["ctid"]
            cur = self.store.get_instance(ctid)
            if cur["state"] in (State.RUNNING, State.SUSPENDED):
                p(0.1, "stopping")
                self.instances._stop(ctid, self.node.config.stop_timeout, False, p)
                cur = self.store.get_instance(ctid)
            src = self._snapdir(ctid) / name / "upper"
            p(0.4, f"restoring {name}")
            with still(self.node, cur) as upper:
                new = upper.with_name(f".upper-{secrets.token_hex(4)}")
                old = upper.with_name(f".upper-old-{secrets.token_hex(4)}")
                layers.copy_tree(src, new)
                try:
                    os.rename(upper, old)
                except BaseException:
                    shutil.rmtree(new, ignore_errors=True)
                    raise
                os.rename(new, upper)
                shutil.rmtree(old)
                work = upper.with_name("work")  # overlayfs scratch space: stale after the swap
                if work.is_dir():
                    for entry in os.listdir(work):
                        remove_tree(work / entry)
            self.node.event("instance.snapshot", cur, snapshot=name, action="restore")
            if o.args["start"]:
                p(0.8, "starting")
                self.instances._start(ctid)
            return {"instance": instance_view(self.node, self.store.get_instance(ctid))}
        return self.node.runner.submit(op, run)

    # ------------------------------------------------------------------ rebase
    def rebase(self, ident, template: str, *, actor=None) -> dict:
        """Give the instance a new root from `template` (NAME or NAME@REVISION): a fresh, empty own layer
        that keeps only its identity (KEEP); volumes and mounts are untouched. A running instance is
        stopped for it and started again."""
        row = self._row(ident, actor)
        name, _, rev = (template or "").partition("@")
        manifest = template_manifest(self.node, name)
        if rev and (not rev.isdigit() or int(rev) != manifest.revision):
            raise NotFound(f"template {name} has revision {manifest.revision}, not {rev!r}", template=template)
        if row["state"] not in (State.STOPPED, State.RUNNING, State.SUSPENDED):
            raise InvalidState(f"cannot rebase instance {row['name']}: it is {row['state']}", state=row["state"])
        op = self._op("instance.rebase", row, {"template": name})

        def run(o: Operation, p: Progress) -> dict:
            ctid = o.args["ctid"]
            cur = self.store.get_instance(ctid)
            was = State(cur["state"])
            if was in (State.RUNNING, State.SUSPENDED):
                p(0.1, "stopping")
                self.instances._stop(ctid, self.node.config.stop_timeout, False, p)
                cur = self.store.get_instance(ctid)
            p(0.4, f"new root from {name}")
            with still(self.node, cur) as upper:
                _fresh_upper(upper, self.node.templates.rootfs(name), idmap_of(self.node, cur))
            self.store.update_instance(ctid, template=name, init=manifest.init, stop_signal=manifest.stop_signal)
            self.node.event("instance.rebased", cur, template=name, previous=cur["template"])
            if was in (State.RUNNING, State.SUSPENDED):
                p(0.8, "starting")
                self.instances._start(ctid)
            return {"instance": instance_view(self.node, self.store.get_instance(ctid))}
        return self.node.runner.submit(op, run)


# what a rebase keeps of the old root: the instance's identity and root's access
KEEP = ("etc/hostname", "etc/hosts", "etc/machine-id", "etc/resolv.conf", "etc/ssh/ssh_host_*",
        "root/.ssh/authorized_keys")


def _fresh_upper(upper: Path, new_lower: Path, idmap: tuple[int, int] | None) -> None:
    new = upper.with_name(f".upper-new-{secrets.token_hex(4)}")
    new.mkdir(mode=0o755)
    try:
        st = os.stat(new_lower)
        base = idmap[0] if idmap else 0
        os.chown(new, base + st.st_uid, base + st.st_gid)
        for pattern in KEEP:
            for src in sorted(upper.glob(pattern)):
                sst = os.lstat(src)
                if layers.is_whiteout(sst) or not (src.is_file() or src.is_symlink()):
                    continue
                rel = src.relative_to(upper)
                parent = new
                for part in rel.parts[:-1]:      # parents as the old layer had them (owner, mode)
                    parent = parent / part
                    if not parent.exists():
                        old = upper / parent.relative_to(new)
                        ost = os.lstat(old)
                        parent.mkdir()
                        os.chown(parent, ost.st_uid, ost.st_gid)
                        os.chmod(parent, ost.st_mode & 0o7777)
                layers.copy_tree(src, new / rel)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    old = upper.with_name(f".upper-old-{secrets.token_hex(4)}")
    os.rename(upper, old)
    os.rename(new, upper)
    remove_tree(old)
    work = upper.with_name("work")
    for entry in os.listdir(work) if work.is_dir() else []:
        remove_tree(work / entry)
