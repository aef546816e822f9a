"""Daemon and CLI settings: defaults < config file < environment (OPENVPS_<KEY>).

OPENVPS_HOME names the state directory (store, instances, runc state, socket, logs). Several
homes can run side by side: every name the node makes (runc root, cgroup subtree) includes the
home's short id, so two daemons never see each other's instances."""
from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

DEFAULT_HOME = "/var/lib/openvps"


@dataclass
class Config:
    home: str = DEFAULT_HOME
    database_url: str = ""          # default: sqlite:///<home>/openvps.db
    template_dir: str = ""          # default: <home>/templates; may be shared between homes
    socket: str = ""                # default: <home>/openvps.sock (root-only)
    listen: str = ""                # optional TCP "host:port" (needs a token per request)
    tls_cert: str = ""              # PEM certificate for TCP (required to listen beyond loopback)
    tls_key: str = ""               # its PEM private key
    runtime: str = "runc"           # runtime driver name
    storage: str = "overlay"        # storage driver name
    runc_binary: str = "runc"
    cgroup_parent: str = ""         # default: <own memory cgroup>/openvps-<home id>
    stop_timeout: int = 60          # seconds of graceful stop before the kill
    workers: int = 8                # concurrent operations
    idmap_base: int = 1_000_000_000  # first host uid of the instances' ranges (far from users and subuids)
    idmap_size: int = 65536          # uids per instance: root inside = idmap_base + k * idmap_size outside
    network: str = "netns"          # network driver name
    node_netns: str = ""            # default: ovps-<home id>; "host" = the daemon's own namespace (a real server)
    uplink: str = "eth0"            # the node's interface towards upstream (inside node_netns)
    public_pool: str = ""           # public (elastic) addresses: 198.51.100.0/28 or first-last
    default_subnet: str = "10.88.0.0/24"   # the network "default" made at first start
    overcommit_ratio: float = 1.0   # guarantees may total (RAM+swap) x this; admission control refuses more
    lxcfs: bool = True              # run one lxcfs for the node so /proc inside shows the instance's limits
    lxcfs_binary: str = "lxcfs"
    events_interval: float = 1.0    # seconds between polls of the counters behind limit/OOM events
    rate_limit: float = 50.0        # API requests per second per user over TCP (0 = no limit); 429 beyond
    rate_burst: int = 200           # requests a user may make at once before rate_limit applies
    sample_interval: int = 10       # seconds between the dashboard's samples (CPU, RAM, swap, network)
    ec2_listen: str = "127.0.0.1:8773"   # the EC2-compatible API (SigV4 access keys); "" = off
    ec2_region: str = "openvps-1"   # the region name the EC2 API reports (its one zone: <region>a)

    @property
    def home_path(self) -> Path:
        return Path(self.home)

    @property
    def home_id(self) -> str:
        return hashlib.sha1(os.path.realpath(self.home).encode()).hexdigest()[:8]

    @property
    def instances_dir(self) -> Path:
        return self.home_path / "instances"

    @property
    def runc_root(self) -> Path:
        return self.home_path / "runc"

    @property
    def log_dir(self) -> Path:
        return self.home_path / "log"

    def finish(self) -> "Config":
        h = self.home_path
        self.database_url = self.database_url or f"sqlite:///{h / 'openvps.db'}"
        self.template_dir = self.template_dir or str(h / "templates")
        self.socket = self.socket or str(h / "openvps.sock")
        self.node_netns = self.node_netns or f"ovps-{self.home_id}"
        self.cgroup_parent = self.cgroup_parent or f"{own_memory_cgroup().rstrip('/')}/openvps-{self.home_id}"
        return self


def own_memory_cgroup() -> str:
    """Our own memory cgroup path (v1) or unified path (v2): every instance goes below it."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return "/"
    unified = "/"
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
        if controllers == "":
            unified = path
    return unified



def load(home: str | None = None, env: dict | None = None) -> Config:
    env = os.environ if env is None else env
    cfg = Config()
    cfg.home = home or env.get("OPENVPS_HOME") or DEFAULT_HOME
    path = Path(env.get("OPENVPS_CONFIG") or Path(cfg.home) / "config.toml")
    names = {f.name: f.type for f in fields(Config)}
    if path.is_file():
        for key, value in tomllib.loads(path.read_text()).items():
            if key in names and key != "home":
                setattr(cfg, key, value)
    for f in fields(Config):
        raw = env.get(f"OPENVPS_{f.name.upper()}")
        if raw is not None and f.name != "home":
            setattr(cfg, f.name, _typed(f.name, f.type, raw))
    return cfg.finish()


def _typed(name: str, typ, raw: str):
    typ = getattr(typ, "__name__", typ)
    try:
        if typ == "int":
            return int(raw)
        if typ == "float":
            return float(raw)
    except ValueError:
        raise SystemExit(f"OPENVPS_{name.upper()}={raw!r}: expected a number") from None
    if typ == "bool":
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return raw
