"""Repository for the networking tables. Every allocation (IPAM, ports, public addresses) happens
inside one store transaction under the store's write lock, so concurrent creates never get the same
address; the unique constraints are the last line of defence."""
from __future__ import annotations

import ipaddress

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from ..domain import network as N
from ..domain.errors import Conflict, InsufficientResources, InvalidArgument, NotFound, QuotaExceeded
from .db import Store, _row_dict
from .models import InstanceRow
from .netmodels import (AddressRow, FirewallRuleRow, ForwardRow, InstanceDnsRow, NetworkRow, NicRow,
                        PublicAddressRow)


class NetStore:
    def __init__(self, store: Store):
        self.store = store

    def _tx(self):
        return self.store._tx()

    def _read(self):
        return self.store._sessions()

    # ---------------------------------------------------------------- networks
    def add_network(self, name: str, subnet: str, nat: bool) -> dict:
        net = N.parse_subnet(subnet)
        try:
            with self._tx() as s:
                if s.scalar(select(NetworkRow).where(NetworkRow.name == name)) is not None:
                    raise Conflict(f"a network named {name!r} exists already; pick another name", network=name)
                N.check_overlap(net, {r.name: r.subnet for r in s.scalars(select(NetworkRow))})
                row = NetworkRow(name=name, subnet=str(net), gateway=str(N.gateway_of(net)), nat=nat)
                s.add(row)
                s.flush()
                return _row_dict(row)
        except IntegrityError:
            raise Conflict(f"network {name!r} or subnet {net} exists already") from None

    def list_networks(self) -> list[dict]:
        with self._read() as s:
            return [_row_dict(r) for r in s.scalars(select(NetworkRow).order_by(NetworkRow.id))]

    def find_network(self, name: str) -> dict | None:
        with self._read() as s:
            r = s.scalar(select(NetworkRow).where(NetworkRow.name == name))
            return _row_dict(r) if r else None

    def get_network(self, name: str) -> dict:
        r = self.find_network(name)
        if r is None:
            known = ", ".join(n["name"] for n in self.list_networks()) or "none"
            raise NotFound(f"no network {name!r} (known: {known}); create it with "
                           f"`openvps network create {name} --subnet 10.89.0.0/24`", network=name)
        return r

    def network_users(self, network_id: int) -> list[str]:
        with self._read() as s:
            q = (select(InstanceRow.name).join(NicRow, NicRow.ctid == InstanceRow.ctid)
                 .where(NicRow.network_id == network_id).distinct())
            return sorted(s.scalars(q))

    def delete_network(self, name: str) -> dict:
        with self._tx() as s:
            r = s.scalar(select(NetworkRow).where(NetworkRow.name == name))
            if r is None:
                raise NotFound(f"no network {name!r}", network=name)
            users = sorted(s.scalars(select(InstanceRow.name).join(NicRow, NicRow.ctid == InstanceRow.ctid)
                                     .where(NicRow.network_id == r.id).distinct()))
            if users:
                raise Conflict(f"network {name!r} is in use by {', '.join(users)}; destroy them or remove their "
                               "addresses (`openvps set CT --ipdel ADDR`) first", network=name, users=users)
            out = _row_dict(r)
            s.delete(r)
            return out

    # ---------------------------------------------------------------- instance interfaces
    def allocate_nics(self, ctid: int, requests: list[tuple[str, list[str]]]) -> list[dict]:
        """requests: (network name, wanted addresses; none = the next free one) per interface, in order
        eth0, eth1, ... All or nothing: one transaction."""
        if len(requests) > N.MAX_NICS:
            raise InvalidArgument(f"at most {N.MAX_NICS} interfaces per instance")
        with self._tx() as s:
            start = max(s.scalars(select(NicRow.idx).where(NicRow.ctid == ctid)), default=-1) + 1
            out = []
            for i, (netname, want) in enumerate(requests):
                net = s.scalar(select(NetworkRow).where(NetworkRow.name == netname))
                if net is None:
                    known = ", ".join(s.scalars(select(NetworkRow.name))) or "none"
                    raise NotFound(f"no network {netname!r} (known: {known}); create it with "
                                   f"`openvps network create {netname} --subnet ...`", network=netname)
                idx = start + i
                s.add(NicRow(ctid=ctid, idx=idx, network_id=net.id, mac=N.mac_for(ctid, idx)))
                addrs = [self._take(s, net, ctid, idx, a) for a in (want or [None])]
                out.append({"idx": idx, "network": net.name, "addresses": addrs})
            return out

    def _take(self, s, net: NetworkRow, ctid: int, idx: int, want: str | None) -> str:
        used = list(s.scalars(select(AddressRow.address).where(AddressRow.network_id == net.id)))
        addr = (N.validate_address(want, net.subnet, used, net.name) if want
                else N.next_free(net.subnet, used, net.name))
        s.add(AddressRow(network_id=net.id, address=addr, ctid=ctid, nic=idx))
        s.flush()
        return addr

    def add_address(self, ctid: int, address: str) -> dict:
        """set --ipadd: onto the instance's interface on the network holding the address, or a new one."""
        try:
            ip = ipaddress.IPv4Address(address)
        except ValueError:
            raise InvalidArgument(f"address {address!r} is not an IPv4 address", field="ipadd") from None
        with self._tx() as s:
            nets = list(s.scalars(select(NetworkRow)))
            net = next((n for n in nets if ip in ipaddress.IPv4Network(n.subnet)), None)
            if net is None:
                subs = ", ".join(f"{n.name} {n.subnet}" for n in nets) or "none"
                raise InvalidArgument(f"address {ip} is in no network (networks: {subs}); create one with "
                                      "`openvps network create`", field="ipadd", address=str(ip))
            nic = s.scalar(select(NicRow).where(NicRow.ctid == ctid, NicRow.network_id == net.id))
            new = nic is None
            if new:
                idx = max(s.scalars(select(NicRow.idx).where(NicRow.ctid == ctid)), default=-1) + 1
                if idx >= N.MAX_NICS:
                    raise InvalidArgument(f"at most {N.MAX_NICS} interfaces per instance")
                s.add(NicRow(ctid=ctid, idx=idx, network_id=net.id, mac=N.mac_for(ctid, idx)))
            else:
                idx = nic.idx
            self._take(s, net, ctid, idx, str(ip))
            return {"idx": idx, "network": net.name, "address": str(ip), "new_nic": new}

    def del_address(self, ctid: int, address: str) -> dict:
        with self._tx() as s:
            row = s.scalar(select(AddressRow).where(AddressRow.ctid == ctid, AddressRow.address == address))
            if row is None:
                raise NotFound(f"the instance has no address {address}", address=address)
            idx = row.nic
            s.delete(row)
            s.flush()
            left = s.scalar(select(AddressRow).where(AddressRow.ctid == ctid, AddressRow.nic == idx))
            if left is None:
                s.execute(delete(NicRow).where(NicRow.ctid == ctid, NicRow.idx == idx))
            return {"idx": idx, "address": address, "nic_removed": left is None}

    def nics(self, ctid: int | None = None) -> list[dict]:
        """Interfaces with their network and addresses (first = primary), ordered by ctid, idx."""
        with self._read() as s:
            nets = {r.id: r for r in s.scalars(select(NetworkRow))}
            q = select(NicRow).order_by(NicRow.ctid, NicRow.idx)
            aq = select(AddressRow).order_by(AddressRow.id)
            if ctid is not None:
                q, aq = q.where(NicRow.ctid == ctid), aq.where(AddressRow.ctid == ctid)
            addrs: dict[tuple[int, int], list[str]] = {}
            for a in s.scalars(aq):
                addrs.setdefault((a.ctid, a.nic), []).append(a.address)
            out = []
            for n in s.scalars(q):
                net = nets[n.network_id]
                out.append({"ctid": n.ctid, "idx": n.idx, "ifname": f"eth{n.idx}", "mac": n.mac,
                            "network": net.name, "network_id": net.id, "bridge": N.bridge_name(net.id),
                            "subnet": net.subnet, "gateway": net.gateway,
                            "prefixlen": ipaddress.IPv4Network(net.subnet).prefixlen,
                            "host_ifname": N.host_ifname(n.ctid, n.idx), "addresses": addrs.get((n.ctid, n.idx), [])})
            return out

    def addresses_of(self, ctid: int) -> list[str]:
        with self._read() as s:
            return list(s.scalars(select(AddressRow.address).where(AddressRow.ctid == ctid)
                                  .order_by(AddressRow.nic, AddressRow.id)))

    def addresses_by_instance(self, ctids: list[int] | None = None) -> dict[int, list[str]]:
        with self._read() as s:
            out: dict[int, list[str]] = {}
            q = select(AddressRow).order_by(AddressRow.ctid, AddressRow.nic, AddressRow.id)
            if ctids is not None:
                q = q.where(AddressRow.ctid.in_(ctids))
            for a in s.scalars(q):
                out.setdefault(a.ctid, []).append(a.address)
            return out

    # ---------------------------------------------------------------- DNS
    def set_dns(self, ctid: int, nameservers: list[str], searchdomain: str | None) -> None:
        with self._tx() as s:
            row = s.get(InstanceDnsRow, ctid)
            if row is None:
                s.add(InstanceDnsRow(ctid=ctid, nameservers=nameservers, searchdomain=searchdomain))
            else:
                row.nameservers, row.searchdomain = nameservers, searchdomain

    def get_dns(self, ctid: int) -> dict:
        with self._read() as s:
            row = s.get(InstanceDnsRow, ctid)
            return {"nameservers": list(row.nameservers), "searchdomain": row.searchdomain} if row else \
                {"nameservers": [], "searchdomain": None}

    # ---------------------------------------------------------------- forwards
    def add_forward(self, ctid: int, proto: str, port: int, target_port: int) -> dict:
        try:
            with self._tx() as s:
                other = s.scalar(select(ForwardRow).where(ForwardRow.proto == proto, ForwardRow.port == port))
                if other is not None:
                    name = s.get(InstanceRow, other.ctid).name
                    raise Conflict(f"{proto} port {port} is already forwarded to {name}:{other.target_port}; "
                                   f"remove it first (`openvps forward remove {proto} {port}`) or pick another port",
                                   proto=proto, port=port)
                if s.scalar(select(NicRow).where(NicRow.ctid == ctid)) is None:
                    raise InvalidArgument("the instance has no network address to forward to; give it one with "
                                          "`openvps set CT --ipadd ADDR`")
                row = ForwardRow(ctid=ctid, proto=proto, port=port, target_port=target_port)
                s.add(row)
                s.flush()
                return _row_dict(row)
        except IntegrityError:
            raise Conflict(f"{proto} port {port} is already forwarded", proto=proto, port=port) from None

    def list_forwards(self, ctid: int | None = None) -> list[dict]:
        with self._read() as s:
            q = select(ForwardRow, InstanceRow.name).join(InstanceRow, InstanceRow.ctid == ForwardRow.ctid)
            if ctid is not None:
                q = q.where(ForwardRow.ctid == ctid)
            return [{**_row_dict(f), "instance": name}
                    for f, name in s.execute(q.order_by(ForwardRow.proto, ForwardRow.port))]

    def remove_forward(self, proto: str, port: int) -> dict:
        with self._tx() as s:
            row = s.scalar(select(ForwardRow).where(ForwardRow.proto == proto, ForwardRow.port == port))
            if row is None:
                raise NotFound(f"no forward of {proto} port {port}; `openvps forward list` shows them",
                               proto=proto, port=port)
            out = _row_dict(row)
            s.delete(row)
            return out

    # ---------------------------------------------------------------- public addresses
    def allocate_public(self, pool: list[str], address: str | None = None, owner: str = "admin",
                        max_count: int | None = None) -> dict:
        """Take an address of the pool for owner; with max_count, refused (quota) when owner has that many."""
        with self._tx() as s:
            if max_count is not None:
                held = s.scalar(select(func.count()).select_from(PublicAddressRow)
                                .where(PublicAddressRow.owner == owner))
                if held >= max_count:
                    raise QuotaExceeded(f"user {owner} may hold {max_count} public address(es) and holds {held}; "
                                        "release one or ask an admin to raise max_public_ips",
                                        quota="max_public_ips", limit=max_count, used=held)
            taken = set(s.scalars(select(PublicAddressRow.address)))
            if address:
                if address not in pool:
                    raise InvalidArgument(f"{address} is not in the public pool", address=address)
                if address in taken:
                    raise Conflict(f"public address {address} is allocated already", address=address)
                pick = address
            else:
                pick = next((a for a in pool if a not in taken), None)
                if pick is None:
                    raise InsufficientResources(
                        f"the public pool is exhausted ({len(pool)} addresses allocated) or not configured; "
                        "release one (`openvps address release ADDR`) or widen public_pool" if pool else
                        "no public pool is configured; set public_pool (OPENVPS_PUBLIC_POOL) on the daemon")
            row = PublicAddressRow(address=pick, ctid=None, owner=owner)
            s.add(row)
            s.flush()
            return _row_dict(row)

    def list_public(self) -> list[dict]:
        with self._read() as s:
            names = dict(s.execute(select(InstanceRow.ctid, InstanceRow.name)).all())
            return [{**_row_dict(r), "instance": names.get(r.ctid)}
                    for r in s.scalars(select(PublicAddressRow).order_by(PublicAddressRow.address))]

    def associate_public(self, address: str, ctid: int | None) -> dict:
        with self._tx() as s:
            row = s.get(PublicAddressRow, address)
            if row is None:
                raise NotFound(f"public address {address} is not allocated; `openvps address allocate` first",
                               address=address)
            if ctid is not None:
                if s.scalar(select(AddressRow).where(AddressRow.ctid == ctid)) is None:
                    raise InvalidArgument("the instance has no private address to map the public one to")
                other = s.scalar(select(PublicAddressRow).where(PublicAddressRow.ctid == ctid,
                                                                PublicAddressRow.address != address))
                if other is not None:
                    raise Conflict(f"the instance holds public address {other.address} already; disassociate it "
                                   "first", address=other.address)
            row.ctid = ctid
            s.flush()
            return _row_dict(row)

    def release_public(self, address: str) -> dict:
        with self._tx() as s:
            row = s.get(PublicAddressRow, address)
            if row is None:
                raise NotFound(f"public address {address} is not allocated", address=address)
            if row.ctid is not None:
                name = s.get(InstanceRow, row.ctid).name
                raise Conflict(f"public address {address} is associated with {name}; disassociate it first",
                               address=address)
            out = _row_dict(row)
            s.delete(row)
            return out

    # ---------------------------------------------------------------- firewall
    def add_rule(self, ctid: int, proto: str, port: int, source: str) -> dict:
        try:
            with self._tx() as s:
                row = FirewallRuleRow(ctid=ctid, proto=proto, port=port, source=source)
                s.add(row)
                s.flush()
                return _row_dict(row)
        except IntegrityError:
            raise Conflict(f"the same rule exists already ({proto} {port} from {source})") from None

    def list_rules(self, ctid: int | None = None) -> list[dict]:
        with self._read() as s:
            q = select(FirewallRuleRow, InstanceRow.name).join(InstanceRow, InstanceRow.ctid == FirewallRuleRow.ctid)
            if ctid is not None:
                q = q.where(FirewallRuleRow.ctid == ctid)
            return [{**_row_dict(r), "instance": n} for r, n in s.execute(q.order_by(FirewallRuleRow.id))]

    def remove_rule(self, rule_id: int) -> dict:
        with self._tx() as s:
            row = s.get(FirewallRuleRow, rule_id)
            if row is None:
                raise NotFound(f"no firewall rule {rule_id}; `openvps firewall list` shows them", rule=rule_id)
            out = _row_dict(row)
            s.delete(row)
            return out

    # ---------------------------------------------------------------- everything the ruleset needs
    def snapshot(self) -> dict:
        return {"networks": self.list_networks(), "nics": self.nics(), "forwards": self.list_forwards(),
                "public": self.list_public(), "rules": self.list_rules()}
