"""A real openvps daemon in a throw-away home, for integration tests (root, real runc)."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from openvps.client import Client
from openvps.config import own_memory_cgroup
from openvps.drivers.cgroup import Cgroups
from openvps.drivers.storage.overlay import mounted

OPENVPS = str(Path(sys.executable).parent / "openvps")


class Daemon:
    def __init__(self, template_dir: Path, home: Path | None = None, env: dict | None = None):
        self.home = home or Path(tempfile.mkdtemp(prefix="ovps-test-"))
        self.template_dir = template_dir
        # each test home gets its own block of uid ranges, so two homes never share one
        idmap_base = 1_000_000_000 + random.randrange(2000) * 16 * 65536
        self.env = {**os.environ, "OPENVPS_HOME": str(self.home), "OPENVPS_TEMPLATE_DIR": str(template_dir),
                    "OPENVPS_STOP_TIMEOUT": "20", "OPENVPS_IDMAP_BASE": str(idmap_base),
                    "OPENVPS_EC2_LISTEN": "",    # off unless a test asks: homes run side by side
                    **(env or {})}
        self.env.pop("OPENVPS_FAULT", None)
        if env and "OPENVPS_FAULT" in env:
            self.env["OPENVPS_FAULT"] = env["OPENVPS_FAULT"]
        self.proc: subprocess.Popen | None = None
        self.client = Client(socket_path=str(self.home / "openvps.sock"))

    # ---- process
    def start(self, env: dict | None = None) -> "Daemon":
        e = dict(self.env)
        e.pop("OPENVPS_FAULT", None)
        e.update(env or {})
        log = open(self.home / "daemon.out", "ab") if self.home.exists() else subprocess.DEVNULL
        self.proc = subprocess.Popen([OPENVPS, "serve"], env=e, stdout=log, stderr=subprocess.STDOUT)
        sock = self.home / "openvps.sock"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}: {self.output()}")
            if sock.exists():
                try:
                    self.client.close()
                    self.client.info()
                    return self
                except Exception:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"daemon did not come up: {self.output()}")

    def output(self) -> str:
        try:
            return (self.home / "daemon.out").read_text()[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.client.close()

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.client.close()

    # ---- helpers
    def cli(self, *args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([OPENVPS, *args], env=self.env, input=input, capture_output=True, text=True,
                              timeout=timeout)

    def ok(self, *args: str, **kw) -> str:
        p = self.cli(*args, **kw)
        assert p.returncode == 0, f"openvps {' '.join(args)} failed ({p.returncode}): {p.stderr}{p.stdout}"
        return p.stdout

    def sh(self, ident: str, script: str) -> str:
        return self.ok("exec", str(ident), "--", "sh", "-c", script).strip()

    @property
    def runc_root(self) -> Path:
        return self.home / "runc"

    @property
    def home_id(self) -> str:
        import hashlib
        return hashlib.sha1(os.path.realpath(self.home).encode()).hexdigest()[:8]

    @property
    def cgroups(self) -> Cgroups:
        return Cgroups(f"{own_memory_cgroup().rstrip('/')}/openvps-{self.home_id}")

    def netns(self) -> list[str]:
        """Network namespaces this home made (its default node namespace and its instances')."""
        return [n for n in netns_list() if n == f"ovps-{self.home_id}" or n.startswith(f"ovps-{self.home_id}-")]

    def runc_containers(self) -> list[str]:
        if not self.runc_root.exists():
            return []
        p = subprocess.run(["runc", "--root", str(self.runc_root), "list", "-q"], capture_output=True, text=True)
        return p.stdout.split()

    def mounts(self) -> list[str]:
        home = os.path.realpath(self.home)
        with open("/proc/self/mountinfo") as f:
            return [line.split()[4] for line in f if line.split()[4].startswith(home + "/")]

    def residue(self) -> dict:
        """What this home has left on the host (must be empty after destroy)."""
        inst = self.home / "instances"
        lxcfs = os.path.realpath(self.home) + "/lxcfs"    # the daemon's own lxcfs (gone when it stops)
        return {"runc": self.runc_containers(), "mounts": [m for m in self.mounts() if m != lxcfs],
                "cgroups": [str(p) for p in self.cgroups.leftovers()],
                "dirs": sorted(p.name for p in inst.iterdir()) if inst.exists() else []}

    # ---- teardown: leave nothing on the host, whatever happened
    def cleanup(self) -> None:
        try:
            if self.proc and self.proc.poll() is None:
                for inst in self.client.instances():
                    try:
                        self.client.wait(self.client.destroy(inst["ctid"], force=True), timeout=60)
                    except Exception:
                        pass
        except Exception:
            pass
        self.stop()
        for cid in self.runc_containers():
            subprocess.run(["runc", "--root", str(self.runc_root), "kill", cid, "KILL"], capture_output=True)
            time.sleep(0.1)
            subprocess.run(["runc", "--root", str(self.runc_root), "delete", "--force", cid], capture_output=True)
        for m in sorted(self.mounts(), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        self.cgroups.prune(ancestors=own_memory_cgroup())
        for ns in self.netns():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if not any(mounted(Path(m)) for m in self.mounts()):
            shutil.rmtree(self.home, ignore_errors=True)


def netns_list() -> list[str]:
    p = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]


def op_json(p: subprocess.CompletedProcess) -> dict:
    return json.loads(p.stdout)


class Upstream:
    """A node namespace with an uplink into an "upstream" namespace standing in for the internet,
    both made here and deleted in cleanup() whatever happened. Nothing touches the host's namespace.

      upstream ns  up0 192.0.2.1/24  <-- veth -->  uplink0 192.0.2.2/24  node ns (default route via .1)
      public pool: 192.0.2.100-192.0.2.109 (addresses on uplink0, answered by ARP)"""

    UP_IP, NODE_IP, POOL = "192.0.2.1", "192.0.2.2", "192.0.2.100-192.0.2.109"

    def __init__(self):
        import secrets
        tag = secrets.token_hex(3)
        self.up, self.node = f"ovps-up-{tag}", f"ovps-node-{tag}"
        self.procs: list[subprocess.Popen] = []
        try:
            for cmd in (["ip", "netns", "add", self.up], ["ip", "netns", "add", self.node],
                        ["ip", "-n", self.up, "link", "add", "up0", "type", "veth", "peer", "name", "uplink0",
                         "netns", self.node],
                        ["ip", "-n", self.up, "addr", "add", f"{self.UP_IP}/24", "dev", "up0"],
                        ["ip", "-n", self.up, "link", "set", "up0", "up"],
                        ["ip", "-n", self.up, "link", "set", "lo", "up"],
                        ["ip", "-n", self.node, "addr", "add", f"{self.NODE_IP}/24", "dev", "uplink0"],
                        ["ip", "-n", self.node, "link", "set", "uplink0", "up"],
                        ["ip", "-n", self.node, "link", "set", "lo", "up"],
                        ["ip", "-n", self.node, "route", "add", "default", "via", self.UP_IP]):
                subprocess.run(cmd, check=True, capture_output=True)
        except Exception:
            self.cleanup()
            raise

    @property
    def env(self) -> dict:
        return {"OPENVPS_NODE_NETNS": self.node, "OPENVPS_UPLINK": "uplink0", "OPENVPS_PUBLIC_POOL": self.POOL}

    def run(self, ns: str, *argv: str, timeout: float = 20, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout,
                              input=input)

    def http(self, ns: str, url: str, timeout: int = 3) -> str | None:
        """GET url from namespace ns with the host's wget; None when nothing answers."""
        p = self.run(ns, "wget", "-qO-", "-T", str(timeout), "-t", "1", url, timeout=timeout + 10)
        return p.stdout.strip() if p.returncode == 0 else None

    def serve_peer(self, port: int = 9000) -> None:
        """A server in the upstream namespace that answers each connection with the peer's address."""
        code = ("import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                f"s.bind(('0.0.0.0',{port}));s.listen()\nwhile True:\n c,a=s.accept();c.sendall(a[0].encode()+b'\\n');c.close()\n")
        p = subprocess.Popen(["ip", "netns", "exec", self.up, sys.executable, "-c", code],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        time.sleep(0.3)

    def ping_sources(self, ns: str, seconds: float, send) -> list[str]:
        """The source addresses of ICMP echo requests that reach namespace ns while send() runs."""
        code = ("import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP)\n"
                f"s.settimeout(0.2)\nend=time.time()+{seconds}\n"
                "while time.time()<end:\n try:\n  d,a=s.recvfrom(2000)\n except OSError: continue\n"
                " if d[(d[0]&15)*4]==8: print(socket.inet_ntoa(d[12:16]),flush=True)\n")
        p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(0.3)
            send()
            out, _ = p.communicate(timeout=seconds + 10)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        return sorted(set(out.split()))

    def links(self) -> list[str]:
        p = self.run(self.node, "ip", "-o", "link")
        return [ln.split(":")[1].strip().split("@")[0] for ln in p.stdout.splitlines()]

    def nft_tables(self) -> str:
        return self.run(self.node, "nft", "list", "tables").stdout

    def cleanup(self) -> None:
        for p in self.procs:        # only what we started, by PID
            if p.poll() is None:
                p.kill()
                p.wait()
        for ns in (self.up, self.node):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
