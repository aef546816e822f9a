"""THE limits table. Validation, the API schema, CLI flags and docs are all generated from it.

Each row: key, kind (size/int/percent), default, range, whether it can change live, how it maps
to the runtime (cgroup), the vzctl/pct alias, and help text."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import InvalidArgument
from .sizes import format_size, parse_size

MIB = 1 << 20


@dataclass(frozen=True)
class NodeFacts:
    """What validation needs to know about the node; gathered by the service (no I/O here)."""
    ram_bytes: int
    swap_bytes: int
    cpus: int


@dataclass(frozen=True)
class Limit:
    key: str
    kind: str                      # "size" (bytes), "int", "percent"
    default: Any
    help: str
    minimum: int = 0
    maximum: Callable[[NodeFacts], int] | int | None = None
    live: bool = True
    cgroup: str = ""               # what it becomes in the kernel, for docs
    alias: str = ""                # the vzctl / pct name
    unit: str = ""
    zero_means: str = ""           # e.g. "unlimited"
    examples: tuple = field(default_factory=tuple)

    def max_for(self, node: NodeFacts) -> int | None:
        return self.maximum(node) if callable(self.maximum) else self.maximum

    def parse(self, value: Any) -> int:
        if self.kind == "size":
            return parse_size(value, self.key)
        try:
            if isinstance(value, bool):
                raise ValueError
            return int(str(value).strip().rstrip("%")) if isinstance(value, str) else int(value)
        except ValueError:
            raise InvalidArgument(f"{self.key}: expected a whole number, got {value!r}") from None

    def render(self, value: int | None) -> str:
        if value is None:
            return "-"
        if self.zero_means and value == 0:
            return self.zero_means
        if self.kind == "size":
            return format_size(value)
        if self.kind == "percent":
            return f"{value}%"
        return str(value)


def _node_mem(n: NodeFacts) -> int:
    return n.ram_bytes + n.swap_bytes


LIMITS: dict[str, Limit] = {lim.key: lim for lim in (
    Limit("ram", "size", 512 * MIB, "RAM the instance may use; above it, pages go to (virtual) swap",
          minimum=16 * MIB, maximum=_node_mem, cgroup="memory.limit_in_bytes / memory.max",
          alias="vzctl --ram, pct memory", examples=("512M", "1.5G")),
    Limit("swap", "size", 512 * MIB, "swap on top of RAM (vSwap); at ram+swap the OOM killer acts inside the instance",
          minimum=0, maximum=_node_mem, cgroup="memory.memsw.limit_in_bytes (=ram+swap) / memory.swap.max",
          alias="vzctl --swap, pct swap", examples=("0", "1G")),
    Limit("cpus", "int", 0, "number of CPUs the instance may run on", minimum=0,
          maximum=lambda n: n.cpus, cgroup="cpuset.cpus", alias="vzctl --cpus, pct cores",
          zero_means="all"),
    Limit("cpuunits", "int", 1000, "relative CPU weight against other instances", minimum=8,
          maximum=500000, cgroup="cpu.shares (x1024/1000) / cpu.weight", alias="vzctl --cpuunits, pct cpuunits"),
    Limit("cpulimit", "percent", 0, "hard CPU cap in percent of one CPU (100 = one full CPU)", minimum=0,
          maximum=lambda n: 100 * n.cpus, cgroup="cpu.cfs_quota_us / cpu.max", alias="vzctl --cpulimit, pct cpulimit",
          unit="%", zero_means="unlimited"),
    Limit("cpuguarantee", "percent", 0, "guaranteed CPU in percent of one CPU (a burstable size: the guarantee "
          "holds under contention, --cpulimit caps the burst)", minimum=0, maximum=lambda n: 100 * n.cpus,
          cgroup="cpu.shares / cpu.weight raised to g% of the node's CPUs", alias="pct cpuunits (guaranteed share)",
          unit="%", zero_means="none"),
    Limit("guarantee", "size", 0, "memory promised to the instance, counted by admission control against the "
          "node's RAM+swap x overcommit_ratio", minimum=16 * MIB, maximum=_node_mem,
          cgroup="(accounting only; oomguarpages barrier)", alias="vzctl --oomguarpages", zero_means="ram",
          examples=("0", "256M")),
    Limit("diskspace", "size", 0, "disk space quota for the instance's own files: an ext4 image, loop-mounted "
          "under its overlay layer (df inside shows it); fixed at create", minimum=64 * MIB, live=False,
          cgroup="(storage) ext4 image file holding the overlay upper+work", alias="vzctl --diskspace",
          zero_means="unlimited", examples=("0", "10G")),
    Limit("pids", "int", 4096, "maximum number of processes and threads", minimum=16, maximum=4194304,
          cgroup="pids.max", alias="vzctl --numproc", zero_means="unlimited"),
)}


def defaults() -> dict[str, int]:
    return {k: lim.default for k, lim in LIMITS.items()}


def validate(values: dict[str, Any], node: NodeFacts, base: dict[str, int] | None = None) -> dict[str, int]:
    """Parse and range-check `values` (user input) merged over `base`; returns the full, typed set."""
    out = dict(base if base is not None else defaults())
    for key, raw in values.items():
        if raw is None:
            continue
        lim = LIMITS.get(key)
        if lim is None:
            raise InvalidArgument(f"unknown limit {key!r}; known limits: {', '.join(LIMITS)}", key=key)
        v = lim.parse(raw)
        top = lim.max_for(node)
        zero_ok = bool(lim.zero_means) and v == 0
        if v < lim.minimum and not zero_ok:
            low = lim.render(lim.minimum) if lim.minimum else "0"   # render(0) may say "all"/"unlimited"
            raise InvalidArgument(f"{key}={lim.render(v)} is below the minimum {low}",
                                  key=key, minimum=lim.minimum)
        if top is not None and v > top:
            raise InvalidArgument(
                f"{key}={lim.render(v)} is more than this node has ({lim.render(top)}); choose a smaller value",
                key=key, maximum=top)
        out[key] = v
    return out


def render_all(values: dict[str, int]) -> dict[str, str]:
    return {k: LIMITS[k].render(v) for k, v in values.items() if k in LIMITS}


def schema() -> dict[str, dict]:
    """JSON-schema-ish description used by the API's OpenAPI and by `openvps limits`."""
    out = {}
    for lim in LIMITS.values():
        out[lim.key] = {
            "kind": lim.kind, "default": lim.default, "minimum": lim.minimum, "live": lim.live,
            "description": lim.help, "cgroup": lim.cgroup, "alias": lim.alias,
            **({"zero_means": lim.zero_means} if lim.zero_means else {}),
        }
    return out
