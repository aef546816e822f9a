"""Unit-test fixtures: a Node on the fake runtime and storage, cgroups in a tmp dir, a hand-made template."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest

from openvps.config import Config
from openvps.domain.limits import NodeFacts
from openvps.drivers.cgroup import Cgroups
from openvps.drivers.network.fake import FakeNetwork
from openvps.drivers.runtime.fake import FakeRuntime
from openvps.drivers.storage.fake import FakeStorage
from openvps.drivers.templates.base import Manifest
from openvps.service.instances import InstanceService
from openvps.service.node import Node
from openvps.service.templates import TemplateService

GIB = 1 << 30
FACTS = NodeFacts(ram_bytes=8 * GIB, swap_bytes=0, cpus=4)


def make_template(root: Path, name: str = "minimal", *, init: str = "busybox",
                  stop_signal: str = "SIGTERM") -> Manifest:
    """A tiny template written by hand (the busybox builder is for integration tests)."""
    rootfs = root / name / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "bin").mkdir()
    (rootfs / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc" / "os-release").write_text('NAME="fake"\n')
    m = Manifest(name=name, os="busybox", release="1.36", init=init, stop_signal=stop_signal, has_sshd=False,
                 size_bytes=1234, archive_bytes=0, created_at="2024-01-01T00:00:00Z", builder=name)
    (root / name / "template.json").write_text(json.dumps(m.to_dict()))
    return m


@pytest.fixture
def template_dir(tmp_path) -> Path:
    d = tmp_path / "templates"
    make_template(d)
    return d


@pytest.fixture
def add_template(template_dir):
    """add_template(name, init=..., stop_signal=...) -> Manifest, next to `minimal`."""
    return lambda name, **kw: make_template(template_dir, name, **kw)


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def storage() -> FakeStorage:
    return FakeStorage()


@pytest.fixture
def cgroot(tmp_path) -> Path:
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory pids\n")   # looks like cgroup v2
    return root


@pytest.fixture
def network() -> FakeNetwork:
    return FakeNetwork()


@pytest.fixture
def node(tmp_path, runtime, storage, template_dir, cgroot, network):
    config = Config(home=str(tmp_path / "home")).finish()
    config.template_dir = str(template_dir)
    config.workers = 4
    n = Node(config, runtime=runtime, storage=storage, cgroups=Cgroups(config.cgroup_parent, root=cgroot),
             facts=FACTS, network=network)
    try:
        yield n
    finally:
        n.close()


@pytest.fixture
def svc(node) -> InstanceService:
    return InstanceService(node)


@pytest.fixture
def tsvc(node) -> TemplateService:
    return TemplateService(node)


@pytest.fixture
def wait(node):
    """wait(op) -> the finished operation row."""
    def _wait(op: dict, timeout: float = 10) -> dict:
        row = node.runner.wait(op["id"], timeout)
        assert row["status"] in ("success", "failure"), f"operation still {row['status']}"
        return row
    return _wait


@pytest.fixture
def make(svc, wait):
    """make(name, start=False, **kw) -> the instance row after a successful create."""
    def _make(name: str, *, start: bool = False, **kw) -> dict:
        op = wait(svc.create(name=name, template=kw.pop("template", "minimal"), start=start, **kw))
        assert op["status"] == "success", op["error"]
        return svc.get(name)
    return _make


@contextmanager
def migrated(url: str, revision: str, *, down: bool = False):
    """The SQLite store at url brought to an Alembic revision (up, or down with down=True); yields the
    connection, still in that transaction, to put old rows in or inspect what is left."""
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from openvps.store.db import _MIGRATIONS
    engine = sa.create_engine(url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(cfg, revision)
            yield conn
    finally:
        engine.dispose()
