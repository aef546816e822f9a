"""Network operations: networks, instance addresses (IPAM), port forwards, public addresses and
firewall rules. Each mutation checks its arguments and changes the store first (so bad input and
conflicts answer 4xx at once, atomically), then runs an operation that makes the node match the
store: bridges, instance interfaces, and ONE nftables transaction rebuilt from the whole store.
If that fails, the store change is undone, so nothing is left half-made."""
from __future__ import annotations

import ipaddress
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from ..domain import network as N
from ..domain.errors import InvalidArgument, NotFound, OpenVPSError
from ..domain.instance import State, parse_ident
from ..drivers.network.ruleset import ruleset
from ..drivers.templates import setup as tsetup
from ..store.netstore import NetStore
from .ops import Operation, Progress, Reverter
from .users import ROOT, Actor, UserService

log = logging.getLogger("openvps.networks")

DEFAULT = "default"
LOCK = "network"


class NetworkService:
    def __init__(self, node):
        self.node = node
        self.store: NetStore = node.netstore
        self.driver = node.network
        self.pool = N.parse_pool(node.config.public_pool)
        self._rules_lock = threading.Lock()
        self._pending: dict[int, Future] = {}   # ctid -> rebuild running while that instance starts
        self._helper: ThreadPoolExecutor | None = None
        self._marker = node.config.home_path / "node-netns.created"

    # ================================================================ the node
    def rebuild(self) -> str:
        """Make the kernel's rules match the store: one atomic nft transaction, then the uplink's
        public addresses."""
        with self._rules_lock:
            snap = self.store.snapshot()
            text = ruleset(snap, self.node.config.uplink)
            self.driver.apply_rules(text)
            self.driver.sync_public([p["address"] for p in snap["public"]], self.pool)
            return text

    def rebuild_soon(self, ctid: int) -> None:
        """rebuild() on a helper thread, overlapping the caller's next steps (mounts, `runc create`);
        attach(ctid) waits for it and raises its error, so the rules are in place before the
        instance's init runs."""
        if self._helper is None:
            self._helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rules")
        self._pending[ctid] = self._helper.submit(self.rebuild)

    def setup(self) -> dict:
        """Daemon start, before the instances are reconciled: the node namespace, the default
        network, every network's bridge."""
        report: dict = {"netns_created": False, "default_network": False}
        if self.driver.setup_node():
            report["netns_created"] = True
            self._marker.write_text(self.node.config.node_netns + "\n")
        if not self.store.list_networks():
            N.parse_subnet(self.node.config.default_subnet)
            self.store.add_network(DEFAULT, self.node.config.default_subnet, nat=True)
            report["default_network"] = True
        for net in self.store.list_networks():
            self.driver.ensure_bridge(net)
        return report

    def reconcile(self) -> dict:
        """Daemon start, after the instances: rules from the store, running instances' interfaces
        repaired, namespaces of stopped or unknown instances removed."""
        report: dict = {"repaired": [], "removed": []}
        self.rebuild()
        rows = {r["ctid"]: r for r in self.node.store.list_instances()}
        for ctid, row in rows.items():
            if row["state"] in (State.RUNNING, State.SUSPENDED):
                st = self.node.runtime.state(self.node.cid(ctid))
                try:
                    if self.store.nics(ctid):
                        self.attach(ctid, pid=st["pid"] if st else None)
                        report["repaired"].append(row["name"])
                except OpenVPSError as e:
                    log.warning("could not repair the network of %s: %s", row["name"], e.message)
        for ctid in self.driver.attached():
            if ctid not in rows or rows[ctid]["state"] not in (State.RUNNING, State.SUSPENDED):
                self.driver.detach(ctid)
                report["removed"].append(ctid)
        return report

    def shutdown(self) -> None:
        """At daemon stop: with no instance running, take our network down (instances keep running
        when the daemon stops, so with any running we leave everything as it is)."""
        running = [r for r in self.node.store.list_instances() if r["state"] in (State.RUNNING, State.SUSPENDED)]
        if running:
            return
        try:
            for ctid in self.driver.attached():
                self.driver.detach(ctid)
            created = self._marker.is_file() and self._marker.read_text().strip() == self.node.config.node_netns
            self.driver.teardown(self.store.list_networks(), remove_netns=created)
            self._marker.unlink(missing_ok=True)
        except Exception:
            log.exception("network teardown failed")

    # ================================================================ instances
    def allocate(self, ctid: int, nets: list[str] | None, ipadd: list[str] | None,
                 nameservers: list[str] | None, searchdomain: str | None) -> list[dict]:
        """IPAM for a new instance, in one store transaction. Default: one interface on `default`."""
        ipadd = list(ipadd or [])
        for ns in nameservers or []:
            N.validate_nameserver(ns)
        if searchdomain is not None:
            N.validate_searchdomain(searchdomain)
        networks = {n["name"]: n for n in self.store.list_networks()}
        ips = []
        for a in ipadd:
            try:
                ips.append(ipaddress.IPv4Address(a))
            except ValueError:
                raise InvalidArgument(f"address {a!r} is not an IPv4 address (e.g. 10.88.0.50)", field="ipadd") from None
        if nets is None:
            if ips:
                nets = []
                for ip in ips:
                    net = next((n["name"] for n in networks.values() if ip in ipaddress.IPv4Network(n["subnet"])), None)
                    if net is None:
                        subs = ", ".join(f"{n['name']} {n['subnet']}" for n in networks.values()) or "none"
                        raise InvalidArgument(f"address {ip} is in no network (networks: {subs})", field="ipadd",
                                              address=str(ip))
                    if net not in nets:
                        nets.append(net)
            else:
                nets = [DEFAULT] if DEFAULT in networks else []
        if len(set(nets)) != len(nets):
            raise InvalidArgument("each --net once: an instance has one interface per network", field="net")
        requests, left = [], list(ips)
        for name in nets:
            N.validate_network_name(name)
            if name not in networks:
                raise NotFound(f"no network {name!r} (known: {', '.join(networks) or 'none'}); create it with "
                               f"`openvps network create {name} --subnet 10.89.0.0/24`", network=name)
            sub = ipaddress.IPv4Network(networks[name]["subnet"])
            mine = [str(ip) for ip in left if ip in sub]
            left = [ip for ip in left if ip not in sub]
            requests.append((name, mine))
        if left:
            raise InvalidArgument(f"address {left[0]} is outside the instance's network(s) "
                                  + ", ".join(f"{n} ({networks[n]['subnet']})" for n in nets), field="ipadd",
                                  address=str(left[0]))
        out = self.store.allocate_nics(ctid, requests) if requests else []
        if nameservers or searchdomain:
            self.store.set_dns(ctid, list(nameservers or []), searchdomain)
        return out

    def netns_path(self, ctid: int) -> str | None:
        return self.driver.instance_netns_path(ctid) if self.store.nics(ctid) else None

    def attach(self, ctid: int, pid: int | None = None) -> str | None:
        pending = self._pending.pop(ctid, None)
        if pending is not None:
            pending.result()
        nics = self.store.nics(ctid)
        if not nics:
            return None
        return self.driver.attach(ctid, nics, pid=pid)

    def detach(self, ctid: int) -> None:
        self.driver.detach(ctid)

    def detach_stale(self, ctid: int) -> None:
        """Before a start: a namespace name left by a crash must not be reused. Without the name
        there is nothing to remove (a namespace's ports die with it, and a stopped instance has no
        process holding one), so skip the scan of the node's links (~10 ms)."""
        if ctid in self.driver.attached():
            self.driver.detach(ctid)

    def write_dns(self, rootfs: Path, ctid: int) -> bool:
        dns = self.store.get_dns(ctid)
        if not dns["nameservers"] and not dns["searchdomain"]:
            return False
        try:
            tsetup.safe_write(rootfs, "etc/resolv.conf", N.resolv_conf(dns["nameservers"], dns["searchdomain"]).encode())
        except (OSError, ValueError, tsetup.SetupError) as e:
            raise InvalidArgument(f"could not write /etc/resolv.conf in the instance: {e}") from None
        return True

    def instance_info(self, ctid: int) -> dict:
        return {"interfaces": [{k: n[k] for k in ("ifname", "network", "mac", "addresses", "gateway", "subnet")}
                               for n in self.store.nics(ctid)],
                "dns": self.store.get_dns(ctid),
                "forwards": [_forward_view(f) for f in self.store.list_forwards(ctid)],
                "public": [p["address"] for p in self.store.list_public() if p["ctid"] == ctid],
                "firewall": [_rule_view(r) for r in self.store.list_rules(ctid)]}

    def change_addresses(self, ctid: int, ipadd: list[str], ipdel: list[str],
                         nameservers: list[str] | None, searchdomain: str | None) -> Callable[[Reverter], None]:
        """set --ipadd/--ipdel/--nameserver/--searchdomain: store changes now (4xx at once), and a
        function that applies them (live when running) inside the caller's operation."""
        for ns in nameservers or []:
            N.validate_nameserver(ns)
        if searchdomain is not None and searchdomain != "":
            N.validate_searchdomain(searchdomain)
        for a in ipdel:
            if not any(a in n["addresses"] for n in self.store.nics(ctid)):
                raise NotFound(f"the instance has no address {a}; `openvps status CT` shows its addresses", address=a)
        done_add, done_del = [], []
        old_dns = self.store.get_dns(ctid)
        try:
            for a in ipdel:
                done_del.append((a, self.store.del_address(ctid, a)))
            for a in ipadd:
                self.store.add_address(ctid, a)
                done_add.append(a)
            if nameservers is not None or searchdomain is not None:
                self.store.set_dns(ctid, list(nameservers if nameservers is not None else old_dns["nameservers"]),
                                   (searchdomain or None) if searchdomain is not None else old_dns["searchdomain"])
        except Exception:
            self._undo_addresses(ctid, done_add, done_del, old_dns)
            raise

        def apply(undo: Reverter) -> None:
            undo.add("restore the addresses", lambda: self._undo_addresses(ctid, done_add, done_del, old_dns))
            row = self.node.store.get_instance(ctid)
            if row["state"] in (State.RUNNING, State.SUSPENDED):
                st = self.node.runtime.state(self.node.cid(ctid))
                undo.add("rewire", lambda: self.attach(ctid))
                self.attach(ctid, pid=st["pid"] if st else None)
            self.rebuild()
            undo.add("rebuild the rules", self.rebuild)
            if nameservers is not None or searchdomain is not None:
                self._write_dns_any_state(row)
        apply.revert = lambda: self._undo_addresses(ctid, done_add, done_del, old_dns)   # type: ignore[attr-defined]
        return apply

    def _undo_addresses(self, ctid, added, deleted, old_dns) -> None:
        for a in reversed(added):
            try:
                self.store.del_address(ctid, a)
            except OpenVPSError:
                pass
        for a, _info in reversed(deleted):
            try:
                self.store.add_address(ctid, a)
            except OpenVPSError:
                pass
        self.store.set_dns(ctid, old_dns["nameservers"], old_dns["searchdomain"])

    def _write_dns_any_state(self, row: dict) -> None:
        bundle = self.node.bundle(row["ctid"])
        running = row["state"] in (State.RUNNING, State.SUSPENDED)
        rootfs = bundle / "rootfs" if running else self.node.storage.mount(bundle, self.node.templates.rootfs(row["template"]))
        try:
            self.write_dns(rootfs, row["ctid"])
        finally:
            if not running:
                self.node.storage.unmount(bundle)

    # ================================================================ helpers for operations
    def _instance(self, ident, actor: Actor = ROOT) -> dict:
        """The instance, if actor may change it; another user's is missing (404, no existence leak)."""
        key = parse_ident(ident)
        row = self.node.store.find_instance(key)
        if row is None or not actor.owns(row):
            raise NotFound(f"no instance {key!r}; `openvps list` shows the instances", instance=str(key))
        return row

    def _mine(self, actor: Actor) -> set[str] | None:
        """Names of actor's instances (None: all, for admins): what a user's lists are filtered by."""
        if actor.admin:
            return None
        return {r["name"] for r in self.node.store.list_instances() if actor.owns(r)}

    def _public(self, address: str, actor: Actor) -> dict:
        row = next((p for p in self.store.list_public() if p["address"] == address), None)
        if row is None or not actor.owns(row):
            raise NotFound(f"public address {address} is not allocated (to you); `openvps address list` shows "
                           "yours", address=address)
        return row

    def _submit(self, kind: str, target: str, args: dict, work: Callable[[Reverter, Progress], dict],
                undo_store: Callable[[], object] | None = None, actor: Actor = ROOT) -> dict:
        op = Operation(kind=kind, target=target, args=args, lock=LOCK, owner=actor.name)

        def run(o: Operation, p: Progress) -> dict:
            with Reverter() as undo:
                if undo_store:
                    undo.add("undo the store change", undo_store)
                result = work(undo, p)
                undo.success()
            return result
        try:
            return self.node.runner.submit(op, run)
        except Exception:
            if undo_store:
                undo_store()
            raise

    def _rebuild_step(self, undo: Reverter) -> None:
        undo.add("rebuild the rules from the restored store", self._safe_rebuild)
        self.rebuild()

    def _safe_rebuild(self) -> None:
        try:
            self.rebuild()
        except OpenVPSError as e:
            log.error("could not rebuild the rules: %s", e.message)

    # ================================================================ networks
    # every user may attach instances to every network; a user sees only their own instances in them
    def list_networks(self, actor: Actor = ROOT) -> list[dict]:
        mine = self._mine(actor)
        return [self._network_view(n, mine=mine) for n in self.store.list_networks()]

    def get_network(self, name: str, actor: Actor = ROOT) -> dict:
        return self._network_view(self.store.get_network(name), detail=True, mine=self._mine(actor))

    def _network_view(self, n: dict, detail: bool = False, mine: set[str] | None = None) -> dict:
        net = ipaddress.IPv4Network(n["subnet"])
        nics = [x for x in self.store.nics() if x["network_id"] == n["id"]]
        users = self.store.network_users(n["id"])
        out = {"name": n["name"], "subnet": n["subnet"], "gateway": n["gateway"], "nat": bool(n["nat"]),
               "bridge": N.bridge_name(n["id"]), "addresses_used": sum(len(x["addresses"]) for x in nics),
               "addresses_total": max(0, net.num_addresses - 3),
               "instances": users if mine is None else [u for u in users if u in mine]}
        if detail:
            names = {r["ctid"]: r["name"] for r in self.node.store.list_instances()}
            out["leases"] = [{"address": a, "instance": names.get(x["ctid"]), "ifname": x["ifname"], "mac": x["mac"]}
                             for x in nics for a in x["addresses"]
                             if mine is None or names.get(x["ctid"]) in mine]
        return out

    def create_network(self, name: str, subnet: str, nat: bool = True, actor: Actor = ROOT) -> dict:
        UserService.require_admin(actor)
        N.validate_network_name(name)
        net = N.parse_subnet(subnet)
        for a in self.pool[:1] + self.pool[-1:]:
            if ipaddress.IPv4Address(a) in net:
                raise InvalidArgument(f"subnet {net} overlaps the public pool {self.node.config.public_pool}",
                                      field="subnet")
        row = self.store.add_network(name, str(net), nat)

        def work(undo: Reverter, p: Progress) -> dict:
            undo.add("remove the bridge", lambda: self.driver.remove_bridge(row))
            self.driver.ensure_bridge(row)
            self._rebuild_step(undo)
            return {"network": self.get_network(name)}
        return self._submit("network.create", name, {"subnet": str(net), "nat": nat}, work,
                            lambda: self.store.delete_network(name), actor=actor)

    def delete_network(self, name: str, actor: Actor = ROOT) -> dict:
        UserService.require_admin(actor)
        row = self.store.delete_network(name)     # refused (409) while in use

        def work(undo: Reverter, p: Progress) -> dict:
            self.rebuild()
            self.driver.remove_bridge(row)
            return {"deleted": name}
        return self._submit("network.delete", name, {}, work)

    # ================================================================ port forwards
    def add_forward(self, ident, proto: str, ports: str, actor: Actor = ROOT) -> dict:
        N.validate_proto(proto)
        port, target = N.parse_ports(ports)
        inst = self._instance(ident, actor)
        row = self.store.add_forward(inst["ctid"], proto, port, target)

        def work(undo: Reverter, p: Progress) -> dict:
            self._rebuild_step(undo)
            return {"forward": _forward_view({**row, "instance": inst["name"]})}
        return self._submit("forward.add", inst["name"], {"proto": proto, "port": port, "target_port": target}, work,
                            lambda: self.store.remove_forward(proto, port), actor=actor)

    def list_forwards(self, actor: Actor = ROOT) -> list[dict]:
        mine = self._mine(actor)
        return [_forward_view(f) for f in self.store.list_forwards() if mine is None or f["instance"] in mine]

    def remove_forward(self, proto: str, port: int, actor: Actor = ROOT) -> dict:
        N.validate_proto(proto)
        N.validate_port(port)
        mine = self._mine(actor)
        if mine is not None and not any(f["proto"] == proto and f["port"] == port and f["instance"] in mine
                                        for f in self.store.list_forwards()):
            raise NotFound(f"no forward of {proto} port {port} (of yours); `openvps forward list` shows them",
                           proto=proto, port=port)
        row = self.store.remove_forward(proto, port)

        def work(undo: Reverter, p: Progress) -> dict:
            self._rebuild_step(undo)
            return {"removed": {"proto": proto, "port": port}}
        return self._submit("forward.remove", f"{proto}/{port}", {}, work,
                            lambda: self.store.add_forward(row["ctid"], proto, port, row["target_port"]), actor=actor)

    # ================================================================ public addresses
    def list_addresses(self, actor: Actor = ROOT) -> list[dict]:
        return [{"address": p["address"], "instance": p["instance"], "owner": p["owner"]}
                for p in self.store.list_public() if actor.owns(p)]

    def allocate_address(self, address: str | None = None, actor: Actor = ROOT) -> dict:
        user = self.node.store.find_user(actor.name)
        row = self.store.allocate_public(self.pool, address, owner=actor.name,
                                         max_count=user["max_public_ips"] if user else None)

        def work(undo: Reverter, p: Progress) -> dict:
            self._rebuild_step(undo)
            return {"address": {"address": row["address"], "instance": None, "owner": actor.name}}
        return self._submit("address.allocate", row["address"], {}, work,
                            lambda: self.store.release_public(row["address"]), actor=actor)

    def associate(self, address: str, ident, actor: Actor = ROOT) -> dict:
        before = self._public(address, actor)
        inst = self._instance(ident, actor)
        self.store.associate_public(address, inst["ctid"])

        def work(undo: Reverter, p: Progress) -> dict:
            self._rebuild_step(undo)     # moving = one atomic ruleset swap
            return {"address": {"address": address, "instance": inst["name"], "owner": before["owner"]}}
        return self._submit("address.associate", address, {"instance": inst["name"]}, work,
                            lambda: self.store.associate_public(address, before["ctid"]), actor=actor)

    def disassociate(self, address: str, actor: Actor = ROOT) -> dict:
        before = self._public(address, actor)
        self.store.associate_public(address, None)

        def work(undo: Reverter, p: Progress) -> dict:
            self._rebuild_step(undo)
            return {"address": {"address": address, "instance": None, "owner": before["owner"]}}
        return self._submit("address.disassociate", address, {}, work,
                            lambda: self.store.associate_public(address, before["ctid"]), actor=actor)

    def release(self, address: str, actor: Actor = ROOT) -> dict:
        before = self._public(address, actor)
        self.store.release_public(address)

        def work(undo: Reverter, p: Progress) -> dict:
            self._rebuild_step(undo)
            return {"released": address}
        return self._submit("address.release", address, {}, work,
                            lambda: self.store.allocate_public(self.pool, address, owner=before["owner"]),
                            actor=actor)

    # ================================================================ firewall (security groups)
    def allow(self, ident, proto: str, port: int, source: str = "0.0.0.0/0", actor: Actor = ROOT) -> dict:
        N.validate_proto(proto)
        N.validate_port(port)
        source = N.validate_source(source)
        inst = self._instance(ident, actor)
        row = self.store.add_rule(inst["ctid"], proto, port, source)

        def work(undo: Reverter, p: Progress) -> dict:
            self._rebuild_step(undo)
            return {"rule": _rule_view({**row, "instance": inst["name"]})}
        return self._submit("firewall.allow", inst["name"], {"proto": proto, "port": port, "source": source}, work,
                            lambda: self.store.remove_rule(row["id"]), actor=actor)

    def list_rules(self, actor: Actor = ROOT) -> list[dict]:
        mine = self._mine(actor)
        return [_rule_view(r) for r in self.store.list_rules() if mine is None or r["instance"] in mine]

    def remove_rule(self, rule_id: int, actor: Actor = ROOT) -> dict:
        mine = self._mine(actor)
        if mine is not None and not any(r["id"] == rule_id and r["instance"] in mine for r in self.store.list_rules()):
            raise NotFound(f"no firewall rule {rule_id} (of yours); `openvps firewall list` shows them", rule=rule_id)
        row = self.store.remove_rule(rule_id)

        def work(undo: Reverter, p: Progress) -> dict:
            self._rebuild_step(undo)
            return {"removed": rule_id}
        return self._submit("firewall.remove", str(rule_id), {}, work,
                            lambda: self.store.add_rule(row["ctid"], row["proto"], row["port"], row["source"]),
                            actor=actor)


def _forward_view(f: dict) -> dict:
    return {"instance": f["instance"], "proto": f["proto"], "port": f["port"], "target_port": f["target_port"]}


def _rule_view(r: dict) -> dict:
    return {"id": r["id"], "instance": r["instance"], "proto": r["proto"], "port": r["port"], "source": r["source"]}
