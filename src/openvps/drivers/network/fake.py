"""An in-memory network driver for unit tests: it records what the real one would make."""
from __future__ import annotations

import copy

from ...domain.errors import DriverError
from .base import NetworkDriver


class FakeNetwork(NetworkDriver):
    name = "fake"
    capabilities = frozenset({"nat", "forward", "public", "firewall"})

    def __init__(self, *, node_netns: str = "ovps-fake", home_id: str = "fake", uplink: str = "eth0",
                 fail_attach: bool = False, fail_rules: bool = False):
        super().__init__(node_netns=node_netns, home_id=home_id, uplink=uplink)
        self.node_ready = False
        self.attached_pids: dict[int, int | None] = {}
        self.bridges: dict[str, dict] = {}
        self.netns: dict[int, list[dict]] = {}
        self.rules: list[str] = []            # every ruleset applied, in order
        self.public: list[str] = []
        self.counters: dict[int, dict[str, int]] = {}   # tests set traffic per CTID
        self.fail_attach = fail_attach
        self.fail_rules = fail_rules

    def setup_node(self) -> bool:
        created = not self.node_ready
        self.node_ready = True
        return created

    def ensure_bridge(self, network: dict) -> None:
        from ...domain.network import bridge_name
        self.bridges[bridge_name(network["id"])] = dict(network)

    def remove_bridge(self, network: dict) -> None:
        from ...domain.network import bridge_name
        self.bridges.pop(bridge_name(network["id"]), None)

    def apply_rules(self, text: str) -> None:
        if self.fail_rules:
            raise DriverError("nft -f failed (fake)")
        self.rules.append(text)

    @property
    def current_rules(self) -> str:
        return self.rules[-1] if self.rules else ""

    def attach(self, ctid: int, nics: list[dict], pid: int | None = None) -> str:
        if self.fail_attach:
            raise DriverError("could not attach (fake)")
        for n in nics:
            if n["bridge"] not in self.bridges:
                raise DriverError(f"no bridge {n['bridge']}")
        self.netns[ctid] = copy.deepcopy(nics)
        self.attached_pids[ctid] = pid
        return self.instance_netns_path(ctid)

    def detach(self, ctid: int) -> None:
        self.netns.pop(ctid, None)

    def attached(self) -> list[int]:
        return sorted(self.netns)

    def traffic(self) -> dict[int, dict[str, int]]:
        zero = {"rx_bytes": 0, "tx_bytes": 0, "rx_packets": 0, "tx_packets": 0}
        return {c: dict(self.counters.get(c, zero)) for c in set(self.netns) | set(self.counters)}

    def sync_public(self, addresses: list[str], pool: list[str]) -> None:
        self.public = sorted(addresses)

    def teardown(self, networks: list[dict], remove_netns: bool) -> None:
        self.bridges.clear()
        self.rules.append("")
        if remove_netns:
            self.node_ready = False
