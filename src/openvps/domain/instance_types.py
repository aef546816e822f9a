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
