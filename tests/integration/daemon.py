"""A real openvps daemon in a throw-away home, for integration tests (root, real runc)."""
from __future__ import annotations

import json
import os
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
        self.env = {**os.environ, "OPENVPS_HOME": str(self.home), "OPENVPS_TEMPLATE_DIR": str(template_dir),
                    "OPENVPS_STOP_TIMEOUT": "20", **(env or {})}
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
    def cgroups(self) -> Cgroups:
        import hashlib
        hid = hashlib.sha1(os.path.realpath(self.home).encode()).hexdigest()[:8]
        return Cgroups(f"{own_memory_cgroup().rstrip('/')}/openvps-{hid}")

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
        if not any(mounted(Path(m)) for m in self.mounts()):
            shutil.rmtree(self.home, ignore_errors=True)


def op_json(p: subprocess.CompletedProcess) -> dict:
    return json.loads(p.stdout)
