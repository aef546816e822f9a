"""The default seccomp profile: allow what a whole OS needs (systemd mounts, unshares and
reboots inside its own namespaces) and deny the known routes to the node's kernel.

A deny list, like LXC's, because a system container runs arbitrary software."""
from __future__ import annotations

import errno
import platform

DENIED = {
    # kernel modules and replacing the kernel
    "init_module", "finit_module", "delete_module", "create_module", "kexec_load", "kexec_file_load",
    # file handles bypass path checks (the "shocker" escape)
    "open_by_handle_at", "name_to_handle_at",
    # raw hardware and kernel memory
    "iopl", "ioperm", "vm86", "vm86old", "uselib", "lookup_dcookie", "nfsservctl",
    # node-wide state: swap, accounting, clock, kernel log, quotas
    "swapon", "swapoff", "acct", "settimeofday", "stime", "clock_settime", "clock_adjtime", "adjtimex",
    "syslog", "quotactl", "quotactl_fd",
    # kernel attack surface a VPS does not need
    "bpf", "perf_event_open", "userfaultfd", "kcmp", "_sysctl", "ustat", "sysfs",
    "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick", "open_tree", "move_mount", "mount_setattr",
}
# keyrings are not namespaced: answer "not implemented" so systemd and others fall back quietly
NOT_IMPLEMENTED = {"keyctl", "add_key", "request_key"}

_ARCHES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}


def profile(machine: str | None = None) -> dict:
    arches = _ARCHES.get(machine or platform.machine(), [])
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": arches,
        "syscalls": [
            {"names": sorted(DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
            {"names": sorted(NOT_IMPLEMENTED), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
        ],
    }
