"""Template operations: build (long, with progress), list, remove (refused while in use)."""
from __future__ import annotations

from ..domain.errors import Conflict, InvalidArgument, NotFound, OpenVPSError
from ..drivers.templates import base as tbase
from .node import Node
from .ops import Operation, Progress


class TemplateService:
    def __init__(self, node: Node):
        self.node = node

    def view(self, m: tbase.Manifest, owner: str | None = None) -> dict:
        """in_use_by lists only the caller's instances unless owner is None (admins)."""
        return {**m.to_dict(), "in_use_by": self.node.store.instances_using_template(m.name, owner),
                "path": str(self.node.templates.rootfs(m.name))}

    def list(self, owner: str | None = None) -> list[dict]:
        return [self.view(m, owner) for m in self.node.templates.list()]

    def get(self, name: str, owner: str | None = None) -> dict:
        try:
            m = self.node.templates.get(name)
        except tbase.InvalidTemplateName:
            m = None
        if m is None:
            raise NotFound(f"no template {name!r}; `openvps template list` shows the built ones", template=name)
        return self.view(m, owner)

    def builders(self) -> list[str]:
        return sorted(tbase.BUILDERS)

    def build(self, name: str, force: bool = False) -> dict:
        try:
            tbase.validate_name(name)
            builder = tbase.get_builder(name)
        except tbase.BuildError as e:
            raise InvalidArgument(str(e), known=self.builders()) from None
        if force and self.node.store.instances_using_template(name):
            raise Conflict(f"template {name!r} is in use; instances would lose their base. Destroy them first",
                           in_use_by=self.node.store.instances_using_template(name))
        try:
            builder.check()
        except tbase.BuildError as e:
            raise InvalidArgument(str(e)) from None

        def run(op: Operation, progress: Progress):
            try:
                m = self.node.templates.build(name, progress, force=force)
            except tbase.BuildError as e:
                raise OpenVPSError(f"building {name} failed: {e}") from None
            return {"template": self.view(m)}
        return self.node.runner.submit(Operation("template.build", name, {"force": force}, lock=f"template:{name}"), run)

    def remove(self, name: str) -> dict:
        self.get(name)
        users = self.node.store.instances_using_template(name)
        if users:
            raise Conflict(f"template {name!r} is used by {', '.join(users)}; destroy those instances first",
                           in_use_by=users)

        def run(op: Operation, progress: Progress):
            if self.node.store.instances_using_template(name):
                raise Conflict(f"template {name!r} came into use; not removed")
            self.node.templates.remove(name)
            return {}
        return self.node.runner.submit(Operation("template.remove", name, lock=f"template:{name}"), run)
