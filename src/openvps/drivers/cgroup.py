"""cgroup v1 and v2 behind one small read/write interface (the Incus habit).

runc creates each instance's cgroup; we read counters, tidy the daemon's subtree, and never
create anything at a hierarchy root of our own accord."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


class Cgroups:
    def __init__(self, parent: str, root: Path = ROOT):
        self.parent = "/" + parent.strip("/")
        self.root = root
        self.version = 2 if (root / "cgroup.controllers").exists() else 1

    def hierarchies(self) -> list[Path]:
        """Mounted v1 hierarchies (named ones like systemd excluded) or the v2 root."""
        if self.version == 2:
            return [self.root]
        out = []
        for d in sorted(self.root.iterdir()):
            if d.is_dir() and not d.is_symlink() and d.name not in ("systemd", "unified") and (d / "cgroup.procs").exists():
                out.append(d)
        return out

    def path(self, controller: str, rel: str = "") -> Path:
        sub = (self.parent + "/" + rel.strip("/")).rstrip("/") if rel else self.parent
        base = self.root if self.version == 2 else self.root / controller
        return base / sub.lstrip("/")

    def instance_path(self, name: str) -> str:
        return f"{self.parent}/{name}"

    def read(self, controller: str, rel: str, key: str) -> str | None:
        try:
            return (self.path(controller, rel) / key).read_text().strip()
        except OSError:
            return None

    def write(self, controller: str, rel: str, key: str, value: str) -> None:
        (self.path(controller, rel) / key).write_text(value)

    def has(self, controller: str, key: str) -> bool:
        base = self.root if self.version == 2 else self.root / controller
        return (base / key).exists() or any(base.glob(f"*/{key}"))

    def leftovers(self) -> list[Path]:
        """Every cgroup dir under our subtree in any hierarchy (for tests and reconcile)."""
        found = []
        for h in self.hierarchies() + [p for p in (self.root / "unified", self.root / "systemd") if p.is_dir()]:
            top = h / self.parent.lstrip("/")
            if top.is_dir():
                found += [Path(d) for d, _s, _f in os.walk(top, topdown=False) if Path(d) != top]
        return found

    def prune(self, ancestors: str = "") -> list[Path]:
        """Remove empty cgroups below our subtree and the subtree itself where empty; with ancestors
        (our own memory cgroup path), also the empty dirs up to that path that runc made for us in the
        other hierarchies — never above it, so shared parents stay."""
        removed = []
        for h in self.hierarchies() + [p for p in (self.root / "unified", self.root / "systemd") if p.is_dir()]:
            top = h / self.parent.lstrip("/")
            if not top.is_dir():
                continue
            for d, _subdirs, _files in os.walk(top, topdown=False):
                try:
                    os.rmdir(d)
                    removed.append(Path(d))
                except OSError:
                    pass
            up, floor = top.parent, h / ancestors.strip("/")
            while ancestors.strip("/") and up.is_relative_to(floor):
                try:
                    os.rmdir(up)   # fails harmlessly while anything lives there (our own memory cgroup)
                except OSError:
                    break
                removed.append(up)
                up = up.parent
        return removed
