import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from daemon import Daemon, Upstream  # noqa: E402

# Shared between runs so the Debian template (45 s of debootstrap) is built once per machine.
TEMPLATE_DIR = Path(os.environ.get("OPENVPS_TEST_TEMPLATE_DIR", "/var/cache/openvps-test/templates"))


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="integration tests need root (real runc, mounts, cgroups)")
        for item in items:
            if "integration" in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def template_dir() -> Path:
    TEMPLATE_DIR.mkdir(parents=True, exist_ok=True)
    return TEMPLATE_DIR


@pytest.fixture(scope="session")
def minimal(template_dir) -> str:
    from openvps.drivers.templates.cache import TemplateCache
    TemplateCache(template_dir).build("minimal")
    return "minimal"


@pytest.fixture
def daemon(template_dir, minimal):
    d = Daemon(template_dir)
    try:
        d.start()
        yield d
    finally:
        d.cleanup()


@pytest.fixture
def make_daemon(template_dir, minimal):
    made = []

    def make(**kw) -> Daemon:
        d = Daemon(kw.pop("template_dir", template_dir), **kw)
        made.append(d)
        return d
    try:
        yield make
    finally:
        for d in made:
            d.cleanup()


@pytest.fixture
def upstream():
    """A node namespace with an uplink into an upstream namespace (see daemon.Upstream)."""
    u = Upstream()
    try:
        yield u
    finally:
        u.cleanup()


@pytest.fixture
def netd(template_dir, minimal, upstream):
    """A daemon whose node network lives in the upstream fixture's node namespace."""
    d = Daemon(template_dir, env=upstream.env)
    d.up = upstream
    try:
        d.start()
        yield d
    finally:
        d.cleanup()
