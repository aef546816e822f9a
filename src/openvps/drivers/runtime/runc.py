"""runc as the runtime: one OCI bundle per instance, state under the home's own runc root.

No resident process per instance: `runc run -d` detaches, and the init is reparented to the host."""
from __future__ import annotations

import functools
import json
import os
import resource
import select
import signal as signals
import subprocess
import time
from pathlib import Path

from ...domain.errors import DriverError
from . import oci
from .base import Runtime, Spec


CGROUP_ROOT = Path("/sys/fs/cgroup")
FIFO_TIMEOUT_MS = 10_000   # a created init that does not answer its start fifo in this long is broken
# the files a delegated cgroup's owner may write (cgroup v2 delegation rules; v1 needs the same few)
DELEGATED_FILES = ("cgroup.procs", "tasks", "cgroup.threads", "cgroup.subtree_control", "cgroup.clone_children",
                   "notify_on_release")


def _signal_name(sig: str) -> str:
    """runc takes names like TERM or numbers; SIGRTMIN+3 has no runc name, so send its number."""
    if sig.startswith("SIGRTMIN+"):
        return str(signals.SIGRTMIN + int(sig.split("+", 1)[1]))
    return sig.removeprefix("SIG")


class RuncRuntime(Runtime):
    name = "runc"
    capabilities = frozenset({"freeze", "live_update", "exec", "tty"})

    def __init__(self, root: Path, binary: str = "runc"):
        self.root = Path(root)
        self.binary = binary
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # we lack CAP_SYS_RESOURCE: never ask for more than we hold
        self.nofile_hard = min(hard if hard != resource.RLIM_INFINITY else 1 << 20, 1 << 20)

    def _cmd(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.root), *args]

    def _run(self, *args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run(self._cmd(*args), input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if check and p.returncode != 0:
            raise DriverError(f"runc {args[0]} failed: {_err(p)}", runc=list(args[:2]))
        return p

    def write_bundle(self, spec: Spec) -> Path:
        path = spec.bundle / "config.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(oci.config(spec, self.nofile_hard)))
        os.replace(tmp, path)
        return path

    def run(self, spec: Spec, before_start=None, meanwhile=None) -> int:
        self.write_bundle(spec)
        log_path = spec.log_path or spec.bundle / "console.log"
        # runc writes the init's pid here: no `runc state` (a whole runc process) to learn it
        pid_file = spec.bundle / "init.pid"
        pid_file.unlink(missing_ok=True)
        with open(log_path, "ab") as log:
            start = log.tell()
            # no pipes: runc's detached init would inherit them and the caller would block until it exits
            if spec.idmap or before_start or meanwhile:
                # in two steps: between create and start the instance's root gets its own cgroups, so
                # systemd inside (an unprivileged root) can manage them (what LXC does), and the caller
                # wires the network namespace runc made (owned by the instance's user namespace)
                proc = subprocess.Popen(self._cmd("create", "--pid-file", str(pid_file), "--bundle",
                                                  str(spec.bundle), spec.cid),
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
                try:
                    if meanwhile:        # the caller's work that needs only to precede the init (runc
                        meanwhile()      # create is ~30 ms of another process: overlap, not queue)
                except BaseException:
                    proc.wait()
                    self.delete(spec.cid, force=True)
                    raise
                p = subprocess.CompletedProcess(proc.args, proc.wait())
                if p.returncode == 0:
                    try:
                        if spec.idmap:
                            self._delegate_cgroups(spec)
                        if before_start:
                            before_start(_read_pid(pid_file))
                    except OSError as e:
                        self.delete(spec.cid, force=True)
                        raise DriverError(f"could not prepare {spec.cid}: {e}") from None
                    except Exception:
                        self.delete(spec.cid, force=True)
                        raise
                    p = self._start_created(spec.cid, log)
            else:
                p = subprocess.run(self._cmd("run", "-d", "--pid-file", str(pid_file), "--bundle", str(spec.bundle),
                                             spec.cid), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        if p.returncode != 0:
            with open(log_path, "rb") as log:
                log.seek(start)
                p.stderr = log.read()[-4000:]
            self.delete(spec.cid, force=True)
            raise DriverError(f"runc could not start {spec.cid}: {_err(p)}")
        return _read_pid(pid_file)

    def _start_created(self, cid: str, log) -> subprocess.CompletedProcess:
        """What `runc start` does, without a runc process (~8 ms): a created container's init waits
        to open <root>/<cid>/exec.fifo for writing; the reader lets it exec, then the fifo goes.
        If the fifo is not where runc 1.x keeps it, ask runc."""
        fifo = self.root / cid / "exec.fifo"
        try:
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return subprocess.run(self._cmd("start", cid), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            # the init writes one byte once it sees a reader (no HUP before a writer ever came)
            ready = poller.poll(FIFO_TIMEOUT_MS)
            data = os.read(fd, 16) if ready else b""
        finally:
            os.close(fd)
        if not data:
            log.write(f"openvps: the init of {cid} did not take its start signal (exec.fifo)\n".encode())
            log.flush()
            return subprocess.CompletedProcess(["start", cid], 1)
        fifo.unlink(missing_ok=True)
        return subprocess.CompletedProcess(["start", cid], 0)

    def _delegate_cgroups(self, spec: Spec) -> None:
        uid = gid = spec.idmap[0]
        rel = spec.cgroup_path.strip("/")
        for hierarchy in _hierarchies():     # plain os calls: this sits between runc create and start
            d = f"{hierarchy}/{rel}"
            try:
                os.chown(d, uid, gid)
            except FileNotFoundError:        # a hierarchy runc does not use (e.g. named, or v2 only)
                continue
            for name in DELEGATED_FILES:
                try:
                    os.chown(f"{d}/{name}", uid, gid)
                except FileNotFoundError:
                    pass

    def known(self, cid: str) -> bool:
        """Whether runc has state for cid (its directory under our root): asking runc about a
        container it does not know costs a process for nothing."""
        return (self.root / cid).is_dir()

    def state(self, cid: str) -> dict | None:
        if not self.known(cid):
            return None
        fast = self._state_from_files(cid)
        if fast is not None:
            return fast
        p = self._run("state", cid, check=False)
        if p.returncode != 0:
            return None
        d = json.loads(p.stdout)
        return {"status": d["status"], "pid": d.get("pid", 0)}

    def _init_of(self, cid: str) -> tuple[int, int, dict] | None:
        """(init pid, its start time in ticks, cgroup paths) from runc's state.json (written whole by
        runc: temp file + rename), or None if it is not as runc 1.x writes it."""
        try:
            with open(self.root / cid / "state.json") as f:
                st = json.load(f)
            return int(st["init_process_pid"]), int(st["init_process_start"]), dict(st["cgroup_paths"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _state_from_files(self, cid: str) -> dict | None:
        """What `runc state` answers, worked out as runc 1.x does it (paused if its freezer is frozen;
        stopped if the init is gone or its start time differs; created while exec.fifo exists; else
        running) from runc's state.json, /proc and the freezer file: no runc process (~5 ms, and a
        `status` or a stop asks often). None when a file is not as expected: then runc is asked."""
        init = self._init_of(cid)
        frozen = _frozen(init[2]) if init else None
        if frozen is None:
            return None
        pid, start, _ = init
        if frozen:
            return {"status": "paused", "pid": pid}
        if pid <= 0 or _start_time(pid) != start:
            return {"status": "stopped", "pid": 0}
        if (self.root / cid / "exec.fifo").exists():
            return {"status": "created", "pid": pid}
        return {"status": "running", "pid": pid}

    def list(self) -> dict[str, dict]:
        p = self._run("list", "--format", "json", check=False)
        if p.returncode != 0 or not p.stdout.strip() or p.stdout.strip() == b"null":
            return {}
        return {d["id"]: {"status": d["status"], "pid": d.get("pid", 0)} for d in json.loads(p.stdout)}

    def kill(self, cid: str, signal: str) -> None:
        if self._signal_init(cid, signal):
            return
        p = self._run("kill", cid, _signal_name(signal), check=False)
        if p.returncode != 0 and b"not running" not in p.stderr and b"does not exist" not in p.stderr:
            raise DriverError(f"runc kill {cid} {signal} failed: {_err(p)}")

    def _signal_init(self, cid: str, signal: str) -> bool:
        """Signal a running init as `runc kill` does, through a pidfd (no runc process): the pidfd
        pins the process, and its start time is checked after opening it, so a recycled pid is never
        hit. False when runc should do it (a paused or created container, files not as expected)."""
        init = self._init_of(cid)
        if init is None or _frozen(init[2]) is not False or (self.root / cid / "exec.fifo").exists():
            return False
        pid, start, _ = init
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return True                       # already gone: runc kill would say "not running"
        except OSError:
            return False
        try:
            if _start_time(pid) == start:     # else the init is gone and the pid is another's
                signals.pidfd_send_signal(fd, _signal_number(signal))
            return True
        except ProcessLookupError:
            return True
        finally:
            os.close(fd)

    def wait_stopped(self, cid: str, timeout: float, pid: int | None = None) -> bool:
        """True once the init has exited. With the init's pid known (from state()), no runc call."""
        if not pid:
            st = self.state(cid)
            if st is None or st["status"] == "stopped" or not st["pid"]:
                return True
            pid = st["pid"]
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return True
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            if poller.poll(max(0, timeout) * 1000):
                return True
            return not _alive(pid)
        finally:
            os.close(fd)

    def delete(self, cid: str, force: bool = False) -> None:
        if not self.known(cid):
            return
        args = ("delete", "--force", cid) if force else ("delete", cid)
        p = self._run(*args, check=False)
        if p.returncode != 0 and b"does not exist" not in p.stderr:
            raise DriverError(f"runc delete {cid} failed: {_err(p)}")

    def pause(self, cid: str) -> None:
        self._run("pause", cid)

    def resume(self, cid: str) -> None:
        self._run("resume", cid)

    def update(self, cid: str, spec: Spec) -> None:
        self.write_bundle(spec)   # so a later restart of runc state sees the same values
        res = oci.resources(spec.limits, spec.cpuset, spec.cpu_shares)
        self._run("update", "--resources", "-", cid, input=json.dumps(res).encode())

    def exec(self, cid, argv, *, tty, env=None, cwd=None, stdin=None, stdout=None, stderr=None, preexec_fn=None):
        args = ["exec"]
        if tty:
            args.append("--tty")
        for k, v in {"PATH": oci.PATH, "TERM": "xterm", "HOME": "/root", **(env or {})}.items():
            args += ["--env", f"{k}={v}"]
        if cwd:
            args += ["--cwd", cwd]
        return subprocess.Popen(self._cmd(*args, cid, *argv), stdin=stdin, stdout=stdout, stderr=stderr,
                                preexec_fn=preexec_fn, start_new_session=preexec_fn is None)


def _signal_number(sig: str) -> int:
    if sig.startswith("SIGRTMIN+"):
        return int(signals.SIGRTMIN) + int(sig.split("+", 1)[1])
    return int(signals.Signals[sig if sig.startswith("SIG") else "SIG" + sig])


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (/proc/PID/stat field 22), None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    if fields[0] in (b"Z", b"X"):          # fields[0] is field 3, the state
        return None
    return int(fields[19])


def _frozen(paths: dict) -> bool | None:
    """Whether the container's freezer holds it (runc's isPaused), None if a file says something
    unexpected or cannot be read (then runc is asked). A missing cgroup is not frozen."""
    try:
        return _read_freezer(paths)
    except (OSError, TypeError, ValueError):
        return None


def _read_freezer(paths: dict) -> bool | None:
    if "freezer" in paths:             # cgroup v1: FROZEN counts only when this cgroup itself froze
        base = paths["freezer"]
        for _ in range(100):
            try:
                with open(f"{base}/freezer.state") as f:
                    state = f.read().strip()
            except FileNotFoundError:
                return False
            if state == "THAWED":
                return False
            if state == "FROZEN":
                try:
                    with open(f"{base}/freezer.self_freezing") as f:
                        return f.read().strip() == "1"
                except FileNotFoundError:
                    return True
            if state != "FREEZING":
                return None
            time.sleep(0.001)              # FREEZING: wait for a stable answer, as runc does
        return None
    if "" in paths:                    # cgroup v2
        try:
            with open(f"{paths['']}/cgroup.freeze") as f:
                value = f.read().strip()
        except FileNotFoundError:
            return False
        return {"0": False, "1": True}.get(value)
    return None


@functools.cache
def _hierarchies() -> tuple[str, ...]:
    """The mounted cgroup hierarchies (v1 controllers, or the one v2 tree), without symlinks such as
    cpu,cpuacct -> cpu."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return (str(CGROUP_ROOT),)
    return tuple(str(h) for h in sorted(CGROUP_ROOT.iterdir()) if h.is_dir() and not h.is_symlink())


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _err(p: subprocess.CompletedProcess) -> str:
    text = (p.stderr or b"").decode(errors="replace").strip()
    # runc logs JSON-ish lines: keep the last human message
    for line in reversed(text.splitlines()):
        if 'msg="' in line:
            return line.split('msg="', 1)[1].rstrip('"')
        if line.strip():
            return line.strip()
    return f"exit code {p.returncode}"


def wait_until(cond, timeout: float, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()
