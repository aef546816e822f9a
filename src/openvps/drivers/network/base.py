"""The network interface: what the service asks of the node's network. Real: netns. Tests: fake.

The node network lives in one network namespace (`node_netns`): one bridge per network holding
the gateway address, the uplink towards upstream, and our nftables tables. Each running instance
gets a named namespace of its own holding eth0.. (veth peers of ports on the bridges); runc joins it.

A `nic` is a dict as the store gives it: idx, ifname, mac, bridge, gateway, prefixlen, host_ifname,
addresses (first = primary)."""
from __future__ import annotations

from abc import ABC, abstractmethod


class NetworkDriver(ABC):
    name = "base"
    capabilities: frozenset[str] = frozenset()

    def __init__(self, *, node_netns: str, home_id: str, uplink: str):
        self.node_netns = node_netns
        self.home_id = home_id
        self.uplink = uplink

    def instance_netns(self, ctid: int) -> str:
        return f"ovps-{self.home_id}-{ctid}"

    def instance_netns_path(self, ctid: int) -> str:
        return f"/run/netns/{self.instance_netns(ctid)}"

    @abstractmethod
    def setup_node(self) -> bool:
        """Make sure the node namespace exists and forwards; True if it was created now."""

    @abstractmethod
    def ensure_bridge(self, network: dict) -> None:
        """The network's bridge with its gateway address, up. Idempotent."""

    @abstractmethod
    def remove_bridge(self, network: dict) -> None: ...

    @abstractmethod
    def apply_rules(self, text: str) -> None:
        """Load a whole ruleset (one `nft -f` transaction) in the node namespace."""

    @abstractmethod
    def attach(self, ctid: int, nics: list[dict], pid: int | None = None) -> str:
        """Create the instance's namespace if missing (or name the one of process `pid`) and make its interfaces match `nics` (add,
        remove, readdress); return the namespace path for the runtime."""

    @abstractmethod
    def detach(self, ctid: int) -> None:
        """Remove the instance's ports and namespace; no error when already gone."""

    @abstractmethod
    def attached(self) -> list[int]:
        """CTIDs of this home that have a namespace now."""

    def traffic(self) -> dict[int, dict[str, int]]:
        """Bytes and packets each attached instance received and sent (its own point of view), by CTID."""
        return {}

    @abstractmethod
    def sync_public(self, addresses: list[str], pool: list[str]) -> None:
        """Exactly `addresses` (of `pool`) are on the uplink."""

    @abstractmethod
    def teardown(self, networks: list[dict], remove_netns: bool) -> None:
        """Remove our tables and bridges (and the node namespace if we made it)."""
