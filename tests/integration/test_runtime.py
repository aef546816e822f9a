"""The runc driver on its own: `meanwhile` work overlaps `runc create` yet always precedes the init."""
import json
import os
import subprocess
import time
import uuid

import pytest

from openvps.config import own_memory_cgroup
from openvps.domain.errors import DriverError
from openvps.domain.limits import defaults
from openvps.drivers.cgroup import Cgroups
from openvps.drivers.mounts import mounted
from openvps.drivers.runtime import Spec
from openvps.drivers.runtime.runc import RuncRuntime
from openvps.drivers.storage.overlay import OverlayStorage


@pytest.fixture
def rig(tmp_path, template_dir, minimal):
    """A runc root, an overlay clone of the minimal template (privileged) and a cgroup parent of our own."""
    parent = f"{own_memory_cgroup().rstrip('/')}/openvps-test-rt-{uuid.uuid4().hex[:8]}"
    runtime, storage, bundle = RuncRuntime(tmp_path / "runc"), OverlayStorage(), tmp_path / "b"
    lower = template_dir / "minimal" / "rootfs"
    storage.create(bundle, lower)
    rootfs = storage.mount(bundle, lower)
    spec = Spec(cid="rt1", bundle=bundle, hostname="rt1", limits=defaults(), cgroup_path=f"{parent}/rt1",
                log_path=tmp_path / "console.log")
    try:
        yield runtime, spec, rootfs
    finally:
        runtime.delete(spec.cid, force=True)
        storage.destroy(bundle)
        Cgroups(parent).prune(ancestors=own_memory_cgroup())
        assert not mounted(rootfs)


def runc_list(runtime) -> list[str]:
    return subprocess.run(["runc", "--root", str(runtime.root), "list", "-q"],
                          capture_output=True, text=True, check=True).stdout.split()


def test_meanwhile_work_is_in_place_before_the_init_runs(rig):
    runtime, spec, rootfs = rig

    seen = []

    def setup():   # the minimal init runs /etc/rc.local at boot
        seen.append(runtime.state(spec.cid))     # runc create may still be at work: no state, or created
        (rootfs / "marker").write_text("written meanwhile\n")
        rc = rootfs / "etc" / "rc.local"
        rc.write_text("#!/bin/sh\ncat /marker > /seen.tmp && mv /seen.tmp /seen\n")   # appears whole
        rc.chmod(0o755)
    pid = runtime.run(spec, meanwhile=setup)
    assert seen[0] is None or seen[0]["status"] in ("creating", "created"), seen
    assert pid > 0 and runtime.state(spec.cid)["status"] == "running"
    deadline = time.monotonic() + 10
    while not (rootfs / "seen").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (rootfs / "seen").read_text() == "written meanwhile\n"


def test_a_failing_meanwhile_leaves_no_container(rig):
    runtime, spec, rootfs = rig

    def setup():
        raise DriverError("setup broke")
    with pytest.raises(DriverError, match="setup broke"):
        runtime.run(spec, meanwhile=setup)
    assert runc_list(runtime) == [] and runtime.state(spec.cid) is None
    cg = f"/sys/fs/cgroup/memory{spec.cgroup_path}"
    assert not os.path.exists(cg)            # runc delete took the cgroup it made


def test_state_from_files_agrees_with_runc_state(rig):
    """The state read from runc's files (no runc process) says what `runc state` says, in every state."""
    runtime, spec, rootfs = rig

    def both() -> tuple[dict, dict]:
        p = subprocess.run(["runc", "--root", str(runtime.root), "state", spec.cid], capture_output=True, text=True)
        ours = runtime._state_from_files(spec.cid)
        theirs = json.loads(p.stdout) if p.returncode == 0 else None
        assert ours is not None and theirs is not None, (ours, p.stderr)
        return ours, {"status": theirs["status"], "pid": theirs.get("pid", 0)}

    runtime.write_bundle(spec)
    with open(spec.bundle / "create.log", "ab") as log:   # no pipes: the created init would hold them open
        subprocess.run(["runc", "--root", str(runtime.root), "create", "--bundle", str(spec.bundle), spec.cid],
                       check=True, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    ours, theirs = both()
    assert ours == theirs and ours["status"] == "created" and ours["pid"] > 0
    with open(spec.bundle / "start.log", "ab") as log:
        assert runtime._start_created(spec.cid, log).returncode == 0
    ours, theirs = both()
    assert ours == theirs and ours["status"] == "running"
    runtime.pause(spec.cid)
    ours, theirs = both()
    assert ours == theirs and ours["status"] == "paused"
    runtime.resume(spec.cid)
    assert both()[0]["status"] == "running"
    pid = ours["pid"]
    asked, real = [], runtime._run
    runtime._run = lambda *a, **kw: (asked.append(a[0]), real(*a, **kw))[1]
    runtime.kill(spec.cid, "SIGKILL")            # through a pidfd, not runc
    assert runtime.wait_stopped(spec.cid, 10, pid=pid)
    assert runtime.state(spec.cid) == {"status": "stopped", "pid": 0} and asked == []   # no runc process
    ours, theirs = both()
    assert ours == theirs == {"status": "stopped", "pid": 0}
    runtime.kill(spec.cid, "SIGTERM")            # a stopped container: nothing to do, no error
