"""Instance types: named sizes that the EC2 API (RunInstances, DescribeInstanceTypes) offers.
Each maps to openvps limits; the price per hour is what an operator would bill (informational)."""
from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    ram: int            # bytes
    swap: int           # bytes
    disk: int           # bytes (the instance's diskspace quota; 0 = no quota)
    price_per_hour: float

    def limits(self, node_cpus: int) -> dict:
        """openvps limits for this size. cpus is capped at the node's CPUs (all of them = no pinning)."""
        out = {"ram": self.ram, "swap": self.swap, "cpus": min(self.vcpus, node_cpus)}
        if self.disk:
            out["diskspace"] = self.disk
        return out


TYPES: dict[str, InstanceType] = {t.name: t for t in (
    InstanceType("ovps.nano", 1, 128 * MIB, 128 * MIB, 1 * GIB, 0.002),
    InstanceType("ovps.micro", 1, 256 * MIB, 256 * MIB, 2 * GIB, 0.004),
    InstanceType("ovps.small", 1, 512 * MIB, 512 * MIB, 5 * GIB, 0.008),
    InstanceType("ovps.medium", 2, 1 * GIB, 1 * GIB, 10 * GIB, 0.016),
    InstanceType("ovps.large", 2, 2 * GIB, 2 * GIB, 20 * GIB, 0.032),
    InstanceType("ovps.xlarge", 4, 4 * GIB, 4 * GIB, 40 * GIB, 0.064),
)}
DEFAULT = "ovps.micro"


def closest(limits: dict, node_cpus: int) -> InstanceType:
    """The type an instance made outside EC2 (CLI/REST/dashboard) is reported as. The type whose limits
    on this node equal the instance's (ram, swap, CPUs, disk quota) if there is one; otherwise the
    nearest by RAM (as a ratio, so 384M is nearer 512M than 256M: RAM is what the sizes are named and
    priced by), then by CPUs, then by swap; on a tie the smaller type."""
    from math import log2

    from .limits import defaults
    lim = {**defaults(), **{k: v for k, v in (limits or {}).items() if v is not None}}
    ram, swap = max(int(lim["ram"]), 1), int(lim["swap"])
    cpus = node_cpus if not lim.get("cpus") else min(int(lim["cpus"]), node_cpus)     # 0 = all CPUs
    disk = int(lim.get("diskspace") or 0)
    for t in TYPES.values():
        if (t.ram, t.swap, min(t.vcpus, node_cpus), t.disk) == (ram, swap, cpus, disk):
            return t
    return min(TYPES.values(), key=lambda t: (abs(log2(ram / t.ram)), abs(cpus - min(t.vcpus, node_cpus)),
                                              abs(log2((swap + 1) / (t.swap + 1))), t.ram))
