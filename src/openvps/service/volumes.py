"""Named volumes (persistent directories under the home that outlive instances) and bind mounts of node
directories, put into an instance's OCI spec when it starts.

Owners: files in a volume are stored with the ids they have inside (root's files are uid 0 on the node,
like a template). An unprivileged instance sees a volume or a bind mount through an idmapped mount
(drivers/idmap.py) made before runc runs, so node uid N shows up as uid N inside: a node directory
owned by root is root's inside, one owned by 1000 is uid 1000's. Several instances with different uid
ranges can share a volume."""
from __future__ import annotations

import os
import posixpath
import re
import shutil
from pathlib import Path

from ..domain.errors import Conflict, Forbidden, InvalidArgument, NotFound
from ..drivers.idmap import idmapped_mount
from ..drivers.storage.overlay import _umount, mounted
from ..store.imagestore import ImageStore
from .node import Node
from .users import ROOT, Actor

VOLUME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
FORBIDDEN_TARGETS = ("/proc", "/sys", "/dev")


def check_volume_name(name: str) -> str:
    if not isinstance(name, str) or not VOLUME_RE.match(name):
        raise InvalidArgument(f"invalid volume name {name!r}: 1-63 of a-z 0-9 _ . -, starting with a letter or digit",
                              field="volumes")
    return name


def check_target(path: str, what: str) -> str:
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path or ".." in path.split("/"):
        raise InvalidArgument(f"{what}: the path inside must be absolute, without '..' (got {path!r})", field=what)
    norm = posixpath.normpath(path)
    if norm == "/" or any(norm == t or norm.startswith(t + "/") for t in FORBIDDEN_TARGETS):
        raise InvalidArgument(f"{what}: cannot mount on {norm}", field=what)
    return norm


def _split(spec: str, what: str) -> tuple[str, str, bool]:
    parts = spec.split(":") if isinstance(spec, str) else []
    ro = False
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        ro = parts[2] == "ro"
        parts = parts[:2]
    if len(parts) != 2 or not parts[0] or not parts[1]:
        example = "data:/var/lib/mysql" if what == "volume" else "/srv/code:/var/www:ro"
        raise InvalidArgument(f"--{what} {spec!r}: write it as {example} (':ro' for read-only)", field=what + "s")
    return parts[0], parts[1], ro


class VolumeService:
    def __init__(self, node: Node):
        self.node = node
        self.repo = ImageStore(node.store)
        self.root = node.config.home_path / "volumes"

    def path(self, name: str) -> Path:
        return self.root / check_volume_name(name)

    # ------------------------------------------------------------------ volumes
    def view(self, row: dict) -> dict:
        from ..drivers.layers import tree_size
        p = self.path(row["name"])
        return {"name": row["name"], "owner": row["owner"], "path": str(p),
                "size_bytes": tree_size(p) if p.exists() else 0, "in_use_by": self.repo.volume_users(row["name"]),
                "created_at": row["created_at"].isoformat() if row.get("created_at") else None}

    def list(self, actor: Actor = ROOT) -> list[dict]:
        return [self.view(r) for r in self.repo.volumes() if actor.admin or r["owner"] == actor.name]

    def _own(self, name: str, actor: Actor) -> dict:
        row = self.repo.find_volume(check_volume_name(name))
        if row is None or not (actor.admin or row["owner"] == actor.name):
            raise NotFound(f"no volume {name!r}; `openvps volume list` shows them", volume=name)
        return row

    def create(self, name: str, actor: Actor = ROOT) -> dict:
        check_volume_name(name)
        row = self.repo.add_volume(name, actor.name)
        self._make_dir(name)
        return self.view(row)

    def _make_dir(self, name: str) -> None:
        self.root.mkdir(mode=0o711, exist_ok=True)
        os.chmod(self.root, 0o711)           # an unprivileged instance's root must traverse it
        p = self.path(name)
        p.mkdir(mode=0o755, exist_ok=True)

    def delete(self, name: str, actor: Actor = ROOT) -> None:
        self._own(name, actor)
        self.repo.delete_volume(name)        # refused (409) while an instance has it
        shutil.rmtree(self.path(name), ignore_errors=True)

    # ------------------------------------------------------------------ at create
    def plan(self, volumes: list[str] | None, mounts: list[str] | None, actor: Actor) -> list[dict]:
        """Validate --volume/--mount specs (nothing is created); rows for add_mounts."""
        rows, targets = [], set()
        for spec in volumes or []:
            name, target, ro = _split(spec, "volume")
            check_volume_name(name)
            existing = self.repo.find_volume(name)
            if existing is not None and not (actor.admin or existing["owner"] == actor.name):
                raise Conflict(f"volume {name!r} belongs to another user", volume=name)
            rows.append({"kind": "volume", "source": name, "target": check_target(target, "volumes"), "readonly": ro})
        for spec in mounts or []:
            if not actor.admin:
                raise Forbidden("bind mounts of node directories are for admins")
            src, target, ro = _split(spec, "mount")
            real = os.path.realpath(src)
            if not src.startswith("/") or not os.path.isdir(real):
                raise InvalidArgument(f"--mount {spec!r}: {src} is not an existing directory on the node",
                                      field="mounts")
            home = os.path.realpath(self.node.config.home_path)
            if real == "/" or real == home or real.startswith(home + "/"):
                raise InvalidArgument(f"--mount {spec!r}: cannot share {real} (the node's root or openvps's home)",
                                      field="mounts")
            rows.append({"kind": "bind", "source": real, "target": check_target(target, "mounts"), "readonly": ro})
        for r in rows:
            if r["target"] in targets:
                raise InvalidArgument(f"two mounts on {r['target']}", field="mounts")
            targets.add(r["target"])
        return rows

    def record(self, ctid: int, rows: list[dict], actor: Actor) -> list[str]:
        """Store an instance's mounts, creating the volumes it names that do not exist yet; returns those
        (for drop_new if the create fails)."""
        made: list[str] = []
        try:
            for r in rows:
                if r["kind"] == "volume" and self.repo.find_volume(r["source"]) is None:
                    try:
                        self.repo.add_volume(r["source"], actor.name)
                        made.append(r["source"])
                    except Conflict:
                        pass                  # made meanwhile by another create: theirs
                    self._make_dir(r["source"])
            self.repo.add_mounts(ctid, rows)
        except Exception:
            self.drop_new(made)
            raise
        return made

    def drop_new(self, names: list[str]) -> None:
        """Remove volumes a failed create made (only while no instance has them)."""
        for name in names:
            if not self.repo.volume_users(name):
                self.repo.delete_volume(name)
                shutil.rmtree(self.path(name), ignore_errors=True)

    def mounts(self, ctid: int) -> list[dict]:
        return self.repo.mounts(ctid)

    # ------------------------------------------------------------------ at start / stop
    def _staging(self, ctid: int) -> Path:
        return self.node.config.home_path / "mounts" / str(ctid)

    def attach(self, row: dict) -> list[dict]:
        """OCI mounts for the instance (making the idmapped views first when it is unprivileged)."""
        out = []
        idmap = None if row["privileged"] or row["uid_base"] is None else (row["uid_base"],
                                                                           self.node.config.idmap_size)
        for i, m in enumerate(self.repo.mounts(row["ctid"])):
            src = str(self.path(m["source"])) if m["kind"] == "volume" else m["source"]
            if m["kind"] == "volume":
                self._make_dir(m["source"])
            if not os.path.isdir(src):
                raise NotFound(f"mount source {src} of instance {row['name']} is gone")
            if idmap:
                stage = self._staging(row["ctid"])
                stage.parent.mkdir(mode=0o711, exist_ok=True)
                os.chmod(stage.parent, 0o711)
                stage.mkdir(mode=0o711, exist_ok=True)
                point = stage / str(i)
                point.mkdir(exist_ok=True)
                if not mounted(point):
                    idmapped_mount(src, str(point), *idmap)
                src = str(point)
            out.append({"destination": m["target"], "type": "bind", "source": src,
                        "options": ["bind", "ro" if m["readonly"] else "rw"]})
        return out

    def detach(self, ctid: int) -> None:
        stage = self._staging(ctid)
        if not stage.is_dir():
            return
        for point in sorted(stage.iterdir()):
            while mounted(point):
                _umount(str(point))
        for point in stage.iterdir():
            point.rmdir()              # rmdir, never rmtree: a mount point that stayed must not be emptied
        stage.rmdir()
