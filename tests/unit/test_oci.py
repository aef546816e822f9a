"""The OCI config we hand runc: isolation settings are data, so check them as data."""
from pathlib import Path

from openvps.domain.limits import defaults
from openvps.drivers.runtime import seccomp
from openvps.drivers.runtime.base import Spec
from openvps.drivers.runtime.oci import config


def _spec(**kw) -> Spec:
    return Spec(cid="101", bundle=Path("/b"), hostname="web1", limits=defaults(), cgroup_path="/x/101", **kw)


def test_unprivileged_instance_gets_its_own_user_namespace_and_range():
    c = config(_spec(idmap=(1_000_065_536, 65536)))
    assert {"type": "user"} in c["linux"]["namespaces"]
    assert c["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 1_000_065_536, "size": 65536}]
    assert c["linux"]["gidMappings"] == c["linux"]["uidMappings"]


def test_privileged_instance_has_no_user_namespace():
    c = config(_spec())
    assert {"type": "user"} not in c["linux"]["namespaces"]
    assert "uidMappings" not in c["linux"]


def test_least_privilege_defaults():
    c = config(_spec(idmap=(1_000_000_000, 65536)))
    caps = set(c["process"]["capabilities"]["bounding"])
    assert "CAP_SYS_MODULE" not in caps and "CAP_SYS_RAWIO" not in caps and "CAP_SYS_TIME" not in caps
    assert "CAP_SYS_RESOURCE" not in caps               # the host's bounding set lacks it
    assert "/proc/sys" in c["linux"]["readonlyPaths"]
    assert "/proc/kcore" in c["linux"]["maskedPaths"]
    assert c["linux"]["resources"]["devices"][0] == {"allow": False, "access": "rwm"}
    sysfs = next(m for m in c["mounts"] if m["destination"] == "/sys")
    assert "ro" in sysfs["options"]


def test_seccomp_denies_the_known_escape_routes_and_allows_what_an_os_needs():
    prof = config(_spec())["linux"]["seccomp"]
    assert prof["defaultAction"] == "SCMP_ACT_ALLOW"
    denied = {n for rule in prof["syscalls"] for n in rule["names"]}
    for name in ("init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
                 "open_by_handle_at", "keyctl", "add_key", "request_key", "swapon", "syslog", "bpf"):
        assert name in denied, name
    for needed in ("mount", "umount2", "unshare", "setns", "pivot_root", "reboot", "clone", "sethostname"):
        assert needed not in denied, needed   # systemd and busybox init need these inside their namespaces
    keyring = next(r for r in prof["syscalls"] if "keyctl" in r["names"])
    assert keyring["errnoRet"] == 38          # ENOSYS: callers fall back instead of failing


def test_seccomp_arches_follow_the_machine():
    assert "SCMP_ARCH_X86_64" in seccomp.profile("x86_64")["architectures"]
    assert "SCMP_ARCH_AARCH64" in seccomp.profile("aarch64")["architectures"]
