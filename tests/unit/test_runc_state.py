"""runc's state read from its files (state.json, /proc, the freezer, exec.fifo), as `runc state` would
answer, and the cases where the driver must ask runc instead. Only files here: the real-runc
comparison is tests/integration/test_runtime.py."""
import json
import os

import pytest

from openvps.drivers.runtime.runc import RuncRuntime, _start_time


@pytest.fixture
def rt(tmp_path):
    runtime = RuncRuntime(tmp_path / "runc")
    freezer = tmp_path / "freezer"
    freezer.mkdir()
    (runtime.root / "c1").mkdir()

    def write(pid=os.getpid(), start=None, paths=None, freezer_state="THAWED", self_freezing="0", **extra):
        (freezer / "freezer.state").write_text(freezer_state + "\n")
        (freezer / "freezer.self_freezing").write_text(self_freezing + "\n")
        st = {"init_process_pid": pid, "init_process_start": _start_time(os.getpid()) if start is None else start,
              "cgroup_paths": {"freezer": str(freezer)} if paths is None else paths, **extra}
        (runtime.root / "c1" / "state.json").write_text(json.dumps(st))
    return runtime, write


def test_running_created_paused_stopped(rt):
    runtime, write = rt
    me = os.getpid()
    write()
    assert runtime._state_from_files("c1") == {"status": "running", "pid": me}
    (runtime.root / "c1" / "exec.fifo").touch()
    assert runtime._state_from_files("c1") == {"status": "created", "pid": me}
    (runtime.root / "c1" / "exec.fifo").unlink()
    write(freezer_state="FROZEN", self_freezing="1")
    assert runtime._state_from_files("c1") == {"status": "paused", "pid": me}
    write(freezer_state="FROZEN", self_freezing="0")        # frozen by an ancestor only: runc says running
    assert runtime._state_from_files("c1")["status"] == "running"
    write(start=_start_time(me) + 1)                         # the pid now belongs to another process
    assert runtime._state_from_files("c1") == {"status": "stopped", "pid": 0}
    write(paths={"freezer": "/nonexistent/cgroup"})          # cgroup gone: not frozen
    assert runtime._state_from_files("c1")["status"] == "running"


@pytest.mark.parametrize("broken", ["no pid", "odd freezer", "no paths", "not json"])
def test_files_not_as_runc_writes_them_ask_runc(rt, broken):
    runtime, write = rt
    if broken == "no pid":
        (runtime.root / "c1" / "state.json").write_text(json.dumps({"init_process_start": 1, "cgroup_paths": {}}))
    elif broken == "odd freezer":
        write(freezer_state="MELTING")
    elif broken == "no paths":
        write(paths={})
    else:
        (runtime.root / "c1" / "state.json").write_text("{half")
    assert runtime._state_from_files("c1") is None
    asked = []
    runtime._run = lambda *a, **kw: asked.append(a) or type("P", (), {"returncode": 1, "stdout": b"", "stderr": b""})()
    assert runtime.state("c1") is None and asked and asked[0][0] == "state"      # runc was asked
    assert runtime._signal_init("c1", "SIGTERM") is False                       # and would do the kill
