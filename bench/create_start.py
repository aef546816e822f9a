#!/usr/bin/env python3
"""Create+start latency of openvps against the floor: the same mounts + `runc run -d`, done directly.

Starts its own daemon in a fresh temporary home (template cache shared, built if missing) and runs,
in interleaved rounds so machine noise hits all alike: floor (mkdir, overlay mount — for unprivileged
instances also the user namespace, idmapped lower mount and chowns — the same OCI config, `runc run
-d`); API create+start of an instance with loopback only (the floor's config: issue 2's instance; the
target is on it) and of one on the network `default` (adds a veth, address, route: shown, not the
target), and create, then start; CLI `openvps create --start` as a subprocess. Then the
teardowns (timed), then the daemon's VmRSS with 0 and --rss-count running instances. Targets: API p50
<= 1.5x floor, CLI <= floor + 150 ms, RSS <= 1.3x. A MISS is no failure; a broken bench is (exit 1).
A finally block removes all it made (also on Ctrl-C/SIGTERM).

    /tmp/venvtest/bin/python bench/create_start.py [-n 20] [--rss-count 100] [--privileged] [--json]
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from openvps.client import Client
from openvps.config import Config, load as load_config, own_memory_cgroup
from openvps.domain.limits import defaults
from openvps.drivers.cgroup import Cgroups
from openvps.drivers.runtime import Spec, oci

OPENVPS = str(Path(sys.executable).parent / "openvps")
TARGET_API, TARGET_CLI_MS, TARGET_RSS = 1.5, 150.0, 1.3
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
now = time.perf_counter
PRIV: dict = {}   # {"privileged": True} with --privileged


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def runc(root: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    return subprocess.run(["runc", "--root", str(root), *args], stdin=subprocess.DEVNULL, **kw)


def mounts_under(path: Path) -> list[str]:
    prefix = os.path.realpath(path) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].encode().decode("unicode_escape") for line in f]
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


def umount(target: str) -> None:
    if _libc.umount2(target.encode(), 0) != 0:
        e = ctypes.get_errno()
        if e != errno.EINVAL and not (e == errno.EBUSY and _libc.umount2(target.encode(), 2) == 0):  # MNT_DETACH
            raise OSError(e, f"umount {target}: {os.strerror(e)}")


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# ------------------------------------------------------------------ idmapped mounts, as drivers/idmap.py makes them
class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def userns_fd(base: int, size: int) -> int:
    """fd of a user namespace mapping 0..size-1 to base..: a forked child unshares, we write its maps."""
    r, w = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()   # the bench has no threads: forking is safe
    if pid == 0:
        try:
            for fd in (r, w2):   # the parent closing its w2 then wakes us
                os.close(fd)
            os.write(w, b"1" if _libc.unshare(0x10000000) == 0 else b"0")   # CLONE_NEWUSER
            os.read(r2, 1)
        finally:
            os._exit(0)
    for fd in (w, r2):
        os.close(fd)
    try:
        if os.read(r, 1) != b"1":
            raise BenchError("floor: unshare(CLONE_NEWUSER) failed")
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(f"0 {base} {size}\n")
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        for fd in (w2, r):
            os.close(fd)
        os.waitpid(pid, 0)


def idmapped_mount(source: str, target: str, base: int, size: int) -> None:
    ufd = userns_fd(base, size)
    try:   # open_tree(AT_FDCWD, CLONE|CLOEXEC), mount_setattr(IDMAP), move_mount(F_EMPTY_PATH)
        fd = _libc.syscall(428, -100, source.encode(), 1 | 0o2000000)
        if fd < 0:
            raise BenchError(f"floor: open_tree {source}: {os.strerror(ctypes.get_errno())}")
        try:
            attr = _MountAttr(0x00100000, 0, 0, ufd)
            if (_libc.syscall(442, fd, b"", 0x1000, ctypes.byref(attr), ctypes.sizeof(attr)) < 0
                    or _libc.syscall(429, fd, b"", -100, target.encode(), 4) < 0):
                raise BenchError(f"floor: idmapped mount on {target}: {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(fd)
    finally:
        os.close(ufd)


# ------------------------------------------------------------------ the floor: the same work, done directly
class Floor:
    def __init__(self, root: Path, lower: Path, idmap: tuple[int, int, int] | None):
        self.state, self.bundles, self.lower = root / "runc", root / "bundles", lower
        self.bundles.mkdir(parents=True)
        self.idmap, self.used = idmap, 0   # (daemon's first uid, range size, ranges) or None: privileged
        self.parent = own_memory_cgroup().rstrip("/") + "/openvps-bench-floor"
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]   # as RuncRuntime.nofile_hard
        self.nofile = min(hard if hard != resource.RLIM_INFINITY else 1 << 20, 1 << 20)
        self.live: dict[str, Path] = {}

    def up(self, name: str) -> dict:
        b, idmap = self.bundles / name, None
        if self.idmap:   # ranges from the top of the daemon's space down: never one of its own
            first, size, ranges = self.idmap
            self.used += 1
            idmap = (first + (ranges - self.used) * size, size)
        spec = Spec(cid=name, bundle=b, hostname=name, limits=defaults(), cgroup_path=f"{self.parent}/{name}",
                    **({"idmap": idmap} if idmap else {}))
        t0 = now()
        for d in ("upper", "work", "rootfs", "lower"):
            (b / d).mkdir(parents=True)
        self.live[name] = b
        lower = self.lower
        if idmap:
            st = os.stat(self.lower)
            os.chown(b / "upper", idmap[0] + st.st_uid, idmap[0] + st.st_gid)
            os.chown(b, idmap[0], idmap[0])
            os.chmod(b, 0o700)
            lower = b / "lower"
            idmapped_mount(str(self.lower), str(lower), *idmap)
        opts = f"lowerdir={lower},upperdir={b / 'upper'},workdir={b / 'work'}"
        if _libc.mount(b"overlay", str(b / "rootfs").encode(), b"overlay", 0, opts.encode()) != 0:
            raise BenchError(f"floor: overlay mount failed: {os.strerror(ctypes.get_errno())}")
        (b / "config.json").write_text(json.dumps(oci.config(spec, self.nofile)))
        with open(b / "console.log", "ab") as out:
            rc = runc(self.state, "run", "-d", "--bundle", str(b), name, stdout=out, stderr=out,
                      capture_output=False).returncode
        dt = now() - t0
        if rc != 0:
            raise BenchError(f"floor: runc run {name} failed: {(b / 'console.log').read_text()[-500:]}")
        return {"floor": dt}

    def down(self, name: str) -> dict:
        b = self.live[name]
        t0 = now()
        runc(self.state, "kill", name, "KILL")
        p = runc(self.state, "delete", "--force", name)
        if p.returncode != 0 and b"does not exist" not in p.stderr:
            raise BenchError(f"floor: runc delete {name}: {p.stderr.decode(errors='replace')[-300:]}")
        umount(str(b / "rootfs"))
        umount(str(b / "lower"))
        shutil.rmtree(b)
        dt = now() - t0
        del self.live[name]
        return {"floor_down": dt}

    def cleanup(self) -> None:
        for name in list(self.live):
            try:
                self.down(name)
            except Exception as e:
                log(f"floor clean-up of {name}: {e}")
        if self.state.exists():   # whatever runc still knows (e.g. interrupted mid-run)
            for cid in runc(self.state, "list", "-q").stdout.decode().split():
                runc(self.state, "kill", cid, "KILL")
                runc(self.state, "delete", "--force", cid)
        for m in mounts_under(self.bundles.parent):
            umount(m)
        Cgroups(self.parent).prune(ancestors=own_memory_cgroup())


# ------------------------------------------------------------------ our daemon, API and CLI
class Daemon:
    def __init__(self, root: Path, template_dir: Path):
        self.home = root / "home"
        self.home.mkdir(mode=0o700)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OPENVPS_")}
        self.env.update(OPENVPS_HOME=str(self.home), OPENVPS_TEMPLATE_DIR=str(template_dir))
        # 3 x N instances of 512M run at once: admission control (guarantees <= RAM+swap) must not refuse
        # them on a small node; this bench times create/start, not admission
        self.env.update(OPENVPS_OVERCOMMIT_RATIO="8")
        self.sock = self.home / "openvps.sock"
        self.client = Client(socket_path=str(self.sock))
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.home / "daemon.out", "ab") as out:   # own session: a terminal's Ctrl-C reaches only us
            self.proc = subprocess.Popen([OPENVPS, "serve"], env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"daemon exited with {self.proc.returncode}: {self.output()}")
            if self.sock.exists():
                try:
                    self.client.info()
                    return
                except Exception:
                    self.client.close()
            time.sleep(0.05)
        raise BenchError(f"daemon did not come up in 30 s: {self.output()}")

    def output(self) -> str:
        try:
            return (self.home / "daemon.out").read_text()[-2000:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmRSS:"))

    def cli(self, *args: str) -> None:
        p = subprocess.run([OPENVPS, *args], env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if p.returncode != 0:
            raise BenchError(f"openvps {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()[-500:]}")

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                log("daemon ignored SIGTERM for 30 s; killing it")
                self.proc.kill()
                self.proc.wait()
        self.client.close()

    def cleanup(self) -> None:
        """Destroy every instance of our (fresh) home, stop the daemon, then remove what is left."""
        if self.alive():
            c = self.client
            try:
                for op in c.operations(status="running") + c.operations(status="pending"):
                    try:
                        c.wait(op, timeout=60)
                    except Exception:
                        pass
                for inst in c.instances():
                    try:
                        c.wait(c.destroy(inst["ctid"], force=True), timeout=60)
                    except Exception as e:
                        log(f"destroy {inst['name']}: {e}")
            except Exception as e:
                log(f"clean-up through the API failed: {e}")
        self.stop()
        state = self.home / "runc"
        for cid in (runc(state, "list", "-q", text=True).stdout.split() if state.exists() else []):
            log(f"left-over runc container {cid}: deleting")
            runc(state, "kill", cid, "KILL")
            runc(state, "delete", "--force", cid)
        for m in mounts_under(self.home):
            umount(m)
        parent = f"{own_memory_cgroup().rstrip('/')}/openvps-{Config(home=str(self.home)).home_id}"
        Cgroups(parent).prune(ancestors=own_memory_cgroup())


def timed(fn, *args) -> float:
    t0 = now()
    fn(*args)
    return now() - t0


def api_up(c: Client, name: str, template: str) -> dict:
    return {"api": timed(lambda: c.wait(c.create(name=name, template=template, start=True, **PRIV)))}


def api_lo_up(c: Client, name: str, template: str) -> dict:
    # issue 2's instance: its own network namespace with loopback only, as the floor's (nets=[])
    return {"api_lo": timed(lambda: c.wait(c.create(name=name, template=template, start=True, nets=[], **PRIV)))}


def api_split_up(c: Client, name: str, template: str) -> dict:
    return {"api_create": timed(lambda: c.wait(c.create(name=name, template=template, start=False, **PRIV))),
            "api_start": timed(lambda: c.wait(c.action(name, "start")))}


def api_down(c: Client, name: str, graceful: bool) -> dict:
    stop = timed(lambda: c.wait(c.action(name, "stop", {"force": not graceful})))
    destroy = timed(lambda: c.wait(c.destroy(name)))
    return {"api_stop": stop, "api_destroy": destroy, "api_down": stop + destroy}


def cli_up(d: Daemon, name: str, template: str) -> dict:
    return {"cli": timed(d.cli, "create", "--name", name, "--template", template, "--start",
                         *(["--privileged"] if PRIV else []))}


def cli_down(d: Daemon, name: str, graceful: bool) -> dict:
    if graceful:
        return {"cli_down": timed(d.cli, "stop", name) + timed(d.cli, "destroy", name)}
    return {"cli_down": timed(d.cli, "destroy", name, "--force")}


ROWS = [("floor", "floor  mounts+config+runc run -d"), ("api_lo", "API    create+start, loopback only"),
        ("api", "API    create+start, on network default"),
        ("api_create", "API    create (no start)"), ("api_start", "API    start"),
        ("cli", "CLI    create --start (subprocess)"), ("floor_down", "floor  runc kill+delete, umount, rm"),
        ("api_stop", "API    stop"), ("api_destroy", "API    destroy"), ("api_down", "API    stop+destroy"),
        ("cli_down", "CLI    destroy")]


def bench(args, root: Path, daemon: Daemon, state: dict) -> dict:
    c = daemon.client
    daemon.start()
    log(f"daemon PID {daemon.proc.pid}, home {daemon.home}")
    if args.template not in [t["name"] for t in c.templates()]:
        log(f"building template {args.template} into {args.template_dir}")
        c.wait(c.build_template(args.template))
    lower = Path(args.template_dir) / args.template / "rootfs"
    if not lower.is_dir():
        raise BenchError(f"template tree {lower} is missing")
    # what the daemon makes (privileged, or with its own uid range) the floor makes too
    probe = c.wait(c.create(name="probe", template=args.template, **PRIV))["result"]["instance"]
    c.wait(c.destroy("probe"))
    idmap = None
    if probe.get("uid_base") is not None:
        cfg = load_config(env=daemon.env)
        idmap = (cfg.idmap_base, cfg.idmap_size, ((1 << 32) - 2 - cfg.idmap_base) // cfg.idmap_size)
    state["mode"] = (f"unprivileged (user namespace, {idmap[1]} uids each; the floor too)" if idmap
                     else "privileged (no user namespace)")
    floor = state["floor"] = Floor(root / "floor", lower, idmap)

    kinds = {"floor": (floor.up, floor.down),
             "api": (lambda n: api_up(c, n, args.template), lambda n: api_down(c, n, args.graceful)),
             "apilo": (lambda n: api_lo_up(c, n, args.template), lambda n: api_down(c, n, args.graceful)),
             "apis": (lambda n: api_split_up(c, n, args.template), lambda n: api_down(c, n, args.graceful)),
             "cli": (lambda n: cli_up(daemon, n, args.template), lambda n: cli_down(daemon, n, args.graceful))}
    order = list(kinds)
    samples: dict[str, list[float]] = {k: [] for k, _ in ROWS}

    def rounds(count: int, prefix: str, phase: int, record: bool) -> None:
        for r in range(count):
            k = r % len(order)
            for kind in order[k:] + order[:k]:   # rotated: no phase always goes first
                got = kinds[kind][phase](f"{prefix}{kind}-{r}")
                if record and (phase == 0 or kind != "apis"):   # the split ones' teardown is not counted
                    for k, v in got.items():
                        samples[k].append(v)

    log(f"warm-up: {args.warmup} round(s), not counted")
    for r in range(args.warmup):
        rounds(1, f"w{r}", 0, False)
        rounds(1, f"w{r}", 1, False)
    time.sleep(0.5)
    rss0 = daemon.rss()
    log(f"measuring: {args.n} rounds of create+start (floor, API, API split, CLI), then {args.n} of teardown")
    rounds(args.n, "b", 0, True)
    rounds(args.n, "b", 1, True)

    log(f"RSS: starting {args.rss_count} instances through the API")
    for i in range(args.rss_count):
        api_up(c, f"rss-{i}", args.template)
    time.sleep(0.5)
    rss_n = daemon.rss()
    running = sum(1 for i in c.instances() if i["state"] == "running")
    destroy_all = timed(lambda: [c.wait(c.destroy(f"rss-{i}", force=True)) for i in range(args.rss_count)])

    ms = {k: {"p50": pct(v, 0.5) * 1000, "p90": pct(v, 0.9) * 1000, "n": len(v)} for k, v in samples.items() if v}
    fl, api, cli = ms["floor"]["p50"], ms["api_lo"]["p50"], ms["cli"]["p50"]
    return {"n": args.n, "warmup": args.warmup, "template": args.template, "mode": state["mode"],
            "stop": "graceful" if args.graceful else "force", "phases_ms": ms,
            "api_over_floor_p50": api / fl, "api_net_over_floor_p50": ms["api"]["p50"] / fl,
            "cli_minus_floor_p50_ms": cli - fl,
            "rss": {"instances": args.rss_count, "running_seen": running, "rss0_bytes": rss0, "rssN_bytes": rss_n,
                    "rss_after_destroy_bytes": daemon.rss(), "ratio": rss_n / rss0, "destroy_all_s": destroy_all},
            "pass": {"api": api / fl <= TARGET_API, "cli": cli - fl <= TARGET_CLI_MS, "rss": rss_n / rss0 <= TARGET_RSS}}


def report(res: dict) -> None:
    mark = {True: "PASS", False: "MISS"}
    print(f"openvps create/start bench: template {res['template']}, N={res['n']} (+{res['warmup']} warm-up), "
          f"stop = {res['stop']}" + ("" if res["stop"] == "graceful" else " (SIGKILL; --graceful for init's signal)"))
    print(f"instances: {res['mode']}")
    print(f"{'phase':<40} {'p50 ms':>9} {'p90 ms':>9} {'n':>4}")
    for key, label in ROWS:
        if key in res["phases_ms"]:
            m = res["phases_ms"][key]
            print(f"{label:<40} {m['p50']:>9.1f} {m['p90']:>9.1f} {m['n']:>4}")
    r, ok = res["rss"], res["pass"]
    print(f"\nAPI/floor (p50)       {res['api_over_floor_p50']:8.2f}x    target <= {TARGET_API}x   {mark[ok['api']]}"
          "   (loopback only, the floor's config)")
    print(f"API on a network/floor {res['api_net_over_floor_p50']:7.2f}x    (adds a veth, address, route and rules; "
          "the floor has none: see bench/network.py)")
    print(f"CLI - floor (p50)     {res['cli_minus_floor_p50_ms']:+8.1f} ms  target <= +{TARGET_CLI_MS:.0f} ms "
          f"{mark[ok['cli']]}")
    print(f"daemon RSS {r['instances']} running / 0: {r['ratio']:8.2f}x    target <= {TARGET_RSS}x   {mark[ok['rss']]}"
          f"   ({r['rss0_bytes'] / 2**20:.1f} MiB -> {r['rssN_bytes'] / 2**20:.1f} MiB with {r['running_seen']} "
          f"running; {r['rss_after_destroy_bytes'] / 2**20:.1f} MiB after destroying them in {r['destroy_all_s']:.1f} s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20, help="measured instances per phase (default 20)")
    ap.add_argument("--warmup", type=int, default=2, help="uncounted warm-up rounds (default 2)")
    ap.add_argument("--rss-count", type=int, default=100, help="running instances for the RSS check (default 100)")
    ap.add_argument("--template", default="minimal", help="template to clone (default minimal)")
    ap.add_argument("--template-dir", default="/var/cache/openvps-bench/templates", help="shared template cache")
    ap.add_argument("--graceful", action="store_true", help="stop with init's signal instead of SIGKILL")
    ap.add_argument("--privileged", action="store_true", help="privileged instances (no user namespace)")
    ap.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    args = ap.parse_args()
    if args.n < 1 or args.rss_count < 1 or args.warmup < 0:
        ap.error("-n and --rss-count must be at least 1, --warmup at least 0")
    if os.geteuid() != 0:
        ap.error("needs root (mounts, runc, cgroups)")
    if args.privileged:
        PRIV["privileged"] = True

    return run_bench(args, "openvps-bench-", lambda root, daemon, state: bench(args, root, daemon, state), report,
                     lambda state: [("floor", state["floor"].cleanup if "floor" in state else None)])


def run_bench(args, prefix: str, bench, report, cleanups=lambda state: []) -> int:
    """The benches' common frame: a temporary root and daemon, bench(root, daemon, state) -> result,
    report(result) (+ JSON with --json), and every clean-up (finish) also on Ctrl-C/SIGTERM or a crash.
    Shared with the other benches."""
    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o711)   # an unprivileged instance's root must reach its bundle (traverse, not list)
    state: dict = {}
    daemon = Daemon(root, Path(args.template_dir))
    code = 0
    try:
        res = bench(root, daemon, state)
        report(res)
        if args.json:
            print(json.dumps(res, indent=2))
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        code = 130
    except Exception as e:
        log(f"bench failed: {type(e).__name__}: {e}")
        code = 1
    finally:
        code = finish(root, code, ("daemon", daemon.cleanup), *cleanups(state))
    return code


def finish(root: Path, code: int, *cleanups) -> int:
    """Run every (name, fn) clean-up even if one fails, then remove root unless something is still
    mounted under it; return the exit code (1 if any clean-up failed). Shared with the other benches."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the clean-up must finish
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for what, fn in cleanups:
        try:
            if fn:
                fn()
        except Exception as e:
            log(f"{what} clean-up: {e}")
            code = code or 1
    left = mounts_under(root)
    if left:
        log(f"NOT removing {root}: still mounted: {left}")
        code = code or 1
    else:
        shutil.rmtree(root, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
