"""The real network driver: pyroute2 for namespaces, links, addresses and routes; nftables (our
own tables only, one `nft -f` transaction) inside the node namespace.

`node_netns` names the node namespace; the special value `host` means the namespace the daemon runs
in (an operator's choice on a real server: then bridges and our nft tables live there; no test does
this). Nothing outside our namespaces, our bridges (ovbr<N>), our ports (vh<CTID>_<N>), our public
addresses and our nft tables is ever changed."""
from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import socket
import subprocess
import threading
from contextlib import contextmanager

from pyroute2 import IPRoute, NetlinkError, netns

from ...domain.errors import DriverError
from .base import NetworkDriver

log = logging.getLogger("openvps.network")

HOST = "host"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(name: str | None, fn):
    """fn() run on a short-lived thread inside the named network namespace (None: ours). The
    namespace is per thread, so the daemon's other threads never move; a netlink socket made
    there stays bound to that namespace. pyroute2's NetNS forks a child for this (~30-50 ms per
    handle); a thread costs ~1 ms."""
    out: dict = {}

    def work():
        try:
            if name:
                fd = os.open(os.path.join(netns.NETNS_RUN_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        e = ctypes.get_errno()
                        raise OSError(e, f"setns into {name}: {os.strerror(e)}")
                finally:
                    os.close(fd)
            out["value"] = fn()
        except BaseException as e:   # handed to the caller's thread
            out["error"] = e

    t = threading.Thread(target=work, name=f"netns-{name}")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def ns_iproute(name: str | None) -> IPRoute:
    """An IPRoute whose socket lives in the named namespace (None: ours)."""
    if not name:
        return IPRoute()
    sock = in_netns(name, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0))   # NETLINK_ROUTE
    try:
        return IPRoute(fileno=sock.detach())
    except Exception:
        sock.close()
        raise


class _Nft:
    """libnftables (what `nft` itself uses), run on a thread inside the node namespace: one atomic
    ruleset load without spawning `ip netns exec ... nft` (~20-70 ms a time)."""

    def __init__(self):
        lib = ctypes.CDLL("libnftables.so.1", use_errno=True)
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        for f in (lib.nft_ctx_buffer_output, lib.nft_ctx_buffer_error):
            f.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.lib = lib

    def run(self, text: str) -> tuple[int, str]:
        ctx = self.lib.nft_ctx_new(0)
        if not ctx:
            return 1, "nft_ctx_new failed"
        try:
            self.lib.nft_ctx_buffer_output(ctx)
            self.lib.nft_ctx_buffer_error(ctx)
            rc = self.lib.nft_run_cmd_from_buffer(ctx, text.encode())
            return rc, (self.lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
        finally:
            self.lib.nft_ctx_free(ctx)


def _load_nft() -> _Nft | None:
    try:
        return _Nft()
    except (OSError, AttributeError):
        return None


class NetnsNetwork(NetworkDriver):
    name = "netns"
    capabilities = frozenset({"nat", "forward", "public", "firewall", "antispoof"})

    def __init__(self, *, node_netns: str, home_id: str, uplink: str, nft: str = "nft"):
        super().__init__(node_netns=node_netns, home_id=home_id, uplink=uplink)
        self.nft = nft
        self._lock = threading.Lock()
        self._libnft = _load_nft() if nft == "nft" else None   # another binary was asked for: spawn it

    # ---------------------------------------------------------------- helpers
    @property
    def on_host(self) -> bool:
        return self.node_netns in ("", HOST)

    @contextmanager
    def _node(self):
        # opened, never created: only setup_node makes the node namespace
        ipr = ns_iproute(None if self.on_host else self.node_netns)
        try:
            yield ipr
        finally:
            ipr.close()

    def _in_node(self, argv: list[str], input: str | None = None) -> subprocess.CompletedProcess:
        cmd = argv if self.on_host else ["ip", "netns", "exec", self.node_netns, *argv]
        return subprocess.run(cmd, input=input, capture_output=True, text=True)

    @staticmethod
    def _idx(ipr, ifname: str) -> int | None:
        found = ipr.link_lookup(ifname=ifname)
        return found[0] if found else None

    # ---------------------------------------------------------------- node
    def setup_node(self) -> bool:
        created = False
        if not self.on_host and self.node_netns not in netns.listnetns():
            netns.create(self.node_netns)
            created = True
        with self._node() as ipr:
            lo = self._idx(ipr, "lo")
            ipr.link("set", index=lo, state="up")
        for key in ("net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"):
            p = self._in_node(["sysctl", "-qw", key])
            if p.returncode != 0 and "ip_forward" in key:
                raise DriverError(f"could not enable forwarding in {self.node_netns}: {p.stderr.strip()}")
        return created

    def ensure_bridge(self, network: dict) -> None:
        from ...domain.network import bridge_name
        name = bridge_name(network["id"])
        prefix = ipaddress.IPv4Network(network["subnet"]).prefixlen
        try:
            with self._node() as ipr:
                idx = self._idx(ipr, name)
                if idx is None:
                    ipr.link("add", ifname=name, kind="bridge")
                    idx = self._idx(ipr, name)
                have = {(a.get("address"), a["prefixlen"]) for a in ipr.get_addr(index=idx, family=2)}
                if (network["gateway"], prefix) not in have:
                    ipr.addr("add", index=idx, address=network["gateway"], prefixlen=prefix)
                ipr.link("set", index=idx, state="up")
        except NetlinkError as e:
            raise DriverError(f"could not set up bridge {name} for network {network['name']}: {e}") from None

    def remove_bridge(self, network: dict) -> None:
        from ...domain.network import bridge_name
        name = bridge_name(network["id"])
        try:
            with self._node() as ipr:
                idx = self._idx(ipr, name)
                if idx is not None:
                    ipr.link("del", index=idx)
        except NetlinkError as e:
            raise DriverError(f"could not remove bridge {name}: {e}") from None

    def apply_rules(self, text: str) -> None:
        with self._lock:
            if self._libnft is not None:
                rc, err = in_netns(None if self.on_host else self.node_netns, lambda: self._libnft.run(text))
            else:
                p = self._in_node([self.nft, "-f", "-"], input=text)
                rc, err = p.returncode, p.stderr
        if rc != 0:
            raise DriverError(f"nft -f failed in {self.node_netns or 'the host namespace'}: {err.strip()[-2000:]}")

    # ---------------------------------------------------------------- instances
    def attach(self, ctid: int, nics: list[dict], pid: int | None = None) -> str:
        name = self.instance_netns(ctid)
        if name not in netns.listnetns():
            if pid:     # a running instance lost its name (e.g. /run was cleaned): name its namespace again
                netns.attach(name, pid)
            else:
                netns.create(name)
        try:
            with self._node() as node, ns_iproute(name) as inst:
                links = {link.get("ifname"): link["index"] for link in inst.get_links()}   # one dump, reused
                inst.link("set", index=links["lo"], state="up")
                want = {n["ifname"]: n for n in nics}
                # remove interfaces no longer wanted (their node-side peer goes with them)
                for ifname, index in list(links.items()):
                    if ifname.startswith("eth") and ifname not in want:
                        inst.link("del", index=index)
                        del links[ifname]
                for n in nics:
                    self._plug(node, inst, name, n, links.get(n["ifname"]))
                self._default_route(inst, nics)
        except NetlinkError as e:
            raise DriverError(f"could not wire the network of instance {ctid}: {e}") from None
        return self.instance_netns_path(ctid)

    def _plug(self, node, inst, nsname: str, n: dict, idx: int | None) -> None:
        host = n["host_ifname"]
        host_idx = self._idx(node, host)
        fresh = idx is None or host_idx is None
        if fresh:
            if idx is not None:
                inst.link("del", index=idx)
            if host_idx is not None:
                node.link("del", index=host_idx)
            # the peer is made in the instance's namespace with its final name and MAC
            node.link("add", ifname=host, kind="veth",
                      peer={"ifname": n["ifname"], "address": n["mac"], "net_ns_fd": nsname})
            host_idx, idx = self._idx(node, host), self._idx(inst, n["ifname"])
        bridge = self._idx(node, n["bridge"])
        if bridge is None:
            raise DriverError(f"network {n['network']} has no bridge {n['bridge']}; restart the daemon to repair it")
        node.link("set", index=host_idx, master=bridge, state="up")
        have = set() if fresh else {a.get("address") for a in inst.get_addr(index=idx, family=2)}
        for a in n["addresses"]:
            if a not in have:
                inst.addr("add", index=idx, address=a, prefixlen=n["prefixlen"])
        for a in have - set(n["addresses"]):
            inst.addr("del", index=idx, address=a, prefixlen=n["prefixlen"])
        inst.link("set", index=idx, state="up")

    def _default_route(self, inst, nics: list[dict]) -> None:
        routes = inst.get_routes(family=2, dst_len=0, table=254)
        first = next((n for n in nics if n["addresses"]), None)
        gw = routes[0].get("gateway") if routes else None
        if first is None:
            if routes:
                inst.route("del", dst="0.0.0.0/0")
            return
        if gw != first["gateway"]:
            if routes:
                inst.route("del", dst="0.0.0.0/0")
            inst.route("add", dst="0.0.0.0/0", gateway=first["gateway"])

    def detach(self, ctid: int) -> None:
        name = self.instance_netns(ctid)
        prefix = f"vh{ctid}_"
        try:
            if not self.on_host and self.node_netns not in netns.listnetns():
                raise OSError("no node namespace")
            with self._node() as node:
                for link in node.get_links():
                    if link.get("ifname", "").startswith(prefix):
                        try:
                            node.link("del", index=link["index"])
                        except NetlinkError:
                            pass
        except (NetlinkError, OSError) as e:
            log.warning("detach %s: %s", ctid, e)
        if name in netns.listnetns():
            netns.remove(name)

    def attached(self) -> list[int]:
        prefix = f"ovps-{self.home_id}-"
        return sorted(int(n[len(prefix):]) for n in netns.listnetns()
                      if n.startswith(prefix) and n[len(prefix):].isdigit())

    def traffic(self) -> dict[int, dict[str, int]]:
        # one netlink dump of the node namespace: the host ends vh<ctid>_<n> of the instances' veths;
        # what the host end sent, the instance received
        out: dict[int, dict[str, int]] = {}
        try:
            with self._node() as node:
                links = node.get_links()
        except (NetlinkError, OSError) as e:
            log.warning("traffic: %s", e)
            return out
        for link in links:
            name = link.get_attr("IFLA_IFNAME") or ""
            stats = link.get_attr("IFLA_STATS64")
            if not name.startswith("vh") or "_" not in name or not stats:
                continue
            ctid = name[2:].split("_", 1)[0]
            if not ctid.isdigit():
                continue
            t = out.setdefault(int(ctid), {"rx_bytes": 0, "tx_bytes": 0, "rx_packets": 0, "tx_packets": 0})
            t["rx_bytes"] += stats["tx_bytes"]
            t["tx_bytes"] += stats["rx_bytes"]
            t["rx_packets"] += stats["tx_packets"]
            t["tx_packets"] += stats["rx_packets"]
        return out

    def sync_public(self, addresses: list[str], pool: list[str]) -> None:
        with self._node() as ipr:
            idx = self._idx(ipr, self.uplink)
            if idx is None:
                if addresses:
                    raise DriverError(f"the uplink {self.uplink!r} does not exist in {self.node_netns}; "
                                      "set uplink (OPENVPS_UPLINK) to the node's upstream interface")
                return
            have = {a.get("address") for a in ipr.get_addr(index=idx, family=2) if a["prefixlen"] == 32}
            pool_set = set(pool)
            for a in set(addresses) - have:
                ipr.addr("add", index=idx, address=a, prefixlen=32)
            for a in (have & pool_set) - set(addresses):
                ipr.addr("del", index=idx, address=a, prefixlen=32)

    def teardown(self, networks: list[dict], remove_netns: bool) -> None:
        from .ruleset import empty
        if not self.on_host and self.node_netns not in netns.listnetns():
            return
        self.apply_rules(empty())
        for net in networks:
            self.remove_bridge(net)
        if remove_netns and not self.on_host:
            netns.remove(self.node_netns)
