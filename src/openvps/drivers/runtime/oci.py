"""OCI runtime config for a system container (the recipe measured in HOST-NOTES). Pure: no I/O."""
from __future__ import annotations

from . import seccomp
from .base import Spec

# What a system container needs (runc's default three make journald fail). No CAP_SYS_RESOURCE:
# the host's bounding set lacks it.
CAPABILITIES = [f"CAP_{c}" for c in (
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE "
    "NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_CHROOT SYS_PTRACE SYS_ADMIN "
    "SYS_BOOT SYS_NICE SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP SYSLOG WAKE_ALARM "
    "BLOCK_SUSPEND AUDIT_READ").split()]

CPU_PERIOD = 100_000
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _mount(dest: str, typ: str, source: str, options: list[str]) -> dict:
    return {"destination": dest, "type": typ, "source": source, "options": options}


MOUNTS = [
    _mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
    _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
    _mount("/dev/pts", "devpts", "devpts", ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
    _mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
    _mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
    _mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
    # rw: with a read-only cgroupfs systemd exits or loses control of its services
    _mount("/sys/fs/cgroup", "cgroup", "cgroup", ["nosuid", "noexec", "nodev", "relatime", "rw"]),
    _mount("/run", "tmpfs", "tmpfs", ["nosuid", "nodev", "mode=755", "size=20%"]),
    _mount("/run/lock", "tmpfs", "tmpfs", ["nosuid", "nodev", "noexec", "mode=1777", "size=5m"]),
    _mount("/tmp", "tmpfs", "tmpfs", ["nosuid", "nodev", "mode=1777"]),
]

MASKED = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
          "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"]
# /proc/sys read-only: systemd copes, and a tenant must not tune the node's kernel
READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def resources(limits: dict[str, int], cpuset: str = "", shares: int | None = None) -> dict:
    """The linux.resources block; also what `runc update --resources -` takes."""
    ram, swap = limits["ram"], limits["swap"]
    res: dict = {
        "memory": {"limit": ram, "swap": ram + swap},   # runc's swap = memsw = RAM + swap
        "cpu": {"shares": shares or max(2, limits["cpuunits"] * 1024 // 1000), "period": CPU_PERIOD,
                "quota": limits["cpulimit"] * CPU_PERIOD // 100 if limits["cpulimit"] else -1},
        "pids": {"limit": limits["pids"] if limits["pids"] else -1},
    }
    if cpuset:
        res["cpu"]["cpus"] = cpuset
    return res


def config(spec: Spec, nofile_hard: int = 20000) -> dict:
    env = {"PATH": PATH, "TERM": "xterm", "container": "oci", **spec.env}
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "cgroup")]
    namespaces.append({"type": "network", "path": spec.netns} if spec.netns else {"type": "network"})
    idmaps = {}
    if spec.idmap:
        namespaces.append({"type": "user"})
        mapping = [{"containerID": 0, "hostID": spec.idmap[0], "size": spec.idmap[1]}]
        idmaps = {"uidMappings": mapping, "gidMappings": mapping}
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["/sbin/init"],
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": "/",
            "capabilities": {k: CAPABILITIES for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile_hard, "soft": min(1024, nofile_hard)}],
            "noNewPrivileges": False,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": spec.hostname,
        "mounts": MOUNTS + list(spec.mounts),
        "linux": {
            "cgroupsPath": spec.cgroup_path,
            "resources": {"devices": [{"allow": False, "access": "rwm"}],
                          **resources(spec.limits, spec.cpuset, spec.cpu_shares)},
            "namespaces": namespaces,
            **idmaps,
            "maskedPaths": MASKED,
            "readonlyPaths": READONLY,
            "seccomp": seccomp.profile(),
        },
    }
