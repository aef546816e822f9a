"""Instance operations. Each public method checks its arguments and prerequisites against the
store (fast feedback: 4xx before any work), then submits an Operation whose handler does the OS
work under the instance's lock, re-checking the state first."""
from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

from ..domain import limits as L
from ..domain.errors import Conflict, DriverError, InvalidArgument, InvalidState, NotFound, OpenVPSError
from ..domain.instance import (State, check_transition, parse_ident, parse_tag, validate_ctid, validate_description,
                               validate_hostname, validate_name, validate_tags)
from ..drivers.runtime import Spec
from .. import faults
from ..drivers.templates import base as tbase
from ..drivers.templates import setup as tsetup
from ..domain import accounting as A
from .accounting import AccountingService
from .node import Node
from .ops import Operation, Progress, Reverter
from .users import ROOT, Actor, UserService, check_if_match
from .views import instance_etag, instance_view
from .volumes import VolumeService

log = logging.getLogger("openvps.instances")


class InstanceService:
    def __init__(self, node: Node):
        self.node = node
        self.store = node.store
        self.users = UserService(node)

    # ---------------------------------------------------------------- queries
    def get(self, ident: str | int, actor: Actor = ROOT) -> dict:
        return instance_view(self.node, self._row(ident, actor), detail=True)

    def get_with_etag(self, ident: str | int, actor: Actor = ROOT) -> tuple[dict, str]:
        row = self._row(ident, actor)
        return instance_view(self.node, row, detail=True), instance_etag(row)

    def list(self, actor: Actor = ROOT) -> list[dict]:
        rows = [r for r in self.store.list_instances() if actor.owns(r)]
        ips = self.node.netstore.addresses_by_instance([r["ctid"] for r in rows])
        return [instance_view(self.node, r, ips=ips) for r in rows]

    def page(self, actor: Actor = ROOT, *, limit: int = 500, cursor: str | None = None, state: str | None = None,
             template: str | None = None, name_prefix: str | None = None, owner: str | None = None,
             tags: list[str] | None = None, fields: list[str] | None = None) -> dict:
        """One page of the list, in CTID order, with an opaque cursor to the next one. Store only:
        no cgroup or runtime call per row."""
        if not 1 <= limit <= 1000:
            raise InvalidArgument("limit: from 1 to 1000", field="limit")
        after = _decode_cursor(cursor) if cursor else None
        if not actor.admin:
            if owner and owner != actor.name:
                return {"items": [], "next_cursor": None}
            owner = actor.name
        if state and state not in {s.value for s in State}:
            raise InvalidArgument(f"state: one of {', '.join(s.value for s in State)}", field="state")
        tag_filter = [parse_tag(t) for t in tags or []]
        rows = self.store.list_instances_page(after=after, limit=limit + 1, state=state, template=template,
                                              name_prefix=name_prefix, owner=owner, tags=tag_filter)
        more = len(rows) > limit
        rows = rows[:limit]
        ips = self.node.netstore.addresses_by_instance([r["ctid"] for r in rows])   # one query, not one per row
        items = [instance_view(self.node, r, ips=ips) for r in rows]
        if fields:
            unknown = set(fields) - set(items[0] if items else LIST_FIELDS)
            if unknown:
                raise InvalidArgument(f"fields: unknown {', '.join(sorted(unknown))}; known: "
                                      f"{', '.join(LIST_FIELDS)}", field="fields")
            items = [{k: it[k] for k in fields if k in it} for it in items]
        return {"items": items, "next_cursor": _encode_cursor(rows[-1]["ctid"]) if more else None}

    def _row(self, ident, actor: Actor = ROOT) -> dict:
        key = parse_ident(ident)
        row = self.store.find_instance(key)
        if row is None or not actor.owns(row):   # another user's instance: 404, never 403 (no existence leak)
            raise NotFound(f"no instance {key!r}; `openvps list` shows the instances", instance=str(key))
        return row

    def _op(self, kind: str, row: dict, args: dict | None = None) -> Operation:
        return Operation(kind=kind, target=row["name"], args={"ctid": row["ctid"], **(args or {})},
                         lock=f"instance:{row['ctid']}", owner=row.get("owner") or "admin")

    def _event(self, type: str, ctid: int, **data) -> None:
        row = self.store.find_instance(ctid)
        if row is not None:
            self.node.event(type, row, **data)

    # ---------------------------------------------------------------- create
    def create(self, *, name: str, template: str, ctid: int | None = None, hostname: str | None = None,
               limits: dict[str, Any] | None = None, ssh_keys: list[str] | None = None,
               root_password: str | None = None, start: bool = False, nets: list[str] | None = None,
               ipadd: list[str] | None = None, nameservers: list[str] | None = None,
               searchdomain: str | None = None, privileged: bool = False,
               tags: dict | None = None, description: str = "", volumes: list[str] | None = None,
               mounts: list[str] | None = None, actor: Actor = ROOT) -> dict:
        validate_name(name)
        mount_rows = VolumeService(self.node).plan(volumes, mounts, actor)   # --volume/--mount (issue 7)
        tags = validate_tags(tags or {})
        description = validate_description(description or "")
        if ctid is not None:
            validate_ctid(ctid)
        hostname = validate_hostname(hostname or name)
        values = L.validate(limits or {}, self.node.facts)
        AccountingService(self.node).admit(name, values)
        for key in ssh_keys or []:
            try:
                tsetup.validate_ssh_key(key)
            except ValueError as e:
                raise InvalidArgument(f"ssh key: {e}") from None
        if root_password is not None and (not isinstance(root_password, str) or not root_password
                                          or any(c in root_password for c in "\n\r\0")):
            raise InvalidArgument("root password: use a non-empty string without newlines or NUL characters",
                                  field="root_password")
        try:
            manifest = self.node.templates.get(template) if isinstance(template, str) and template else None
        except tbase.InvalidTemplateName as e:
            raise InvalidArgument(str(e), field="template") from None
        if manifest is None:
            known = ", ".join(m.name for m in self.node.templates.list()) or "none yet"
            raise NotFound(f"no template {template!r} (built: {known}); build it with `openvps template build {template}`",
                           template=template)
        quota = self.users.has_quota(actor.name)
        if quota:
            self.users.check_quota(actor.name, add_instances=1, ram_delta=values.get("ram", 0))
        # reserve the CTID and name now: duplicates fail here, and a crash leaves a 'creating' row
        # that the next daemon start rolls back
        row = None
        for _ in range(20):
            want = ctid if ctid is not None else self.store.next_ctid()
            while ctid is None and self.node.bundle(want).exists():     # an orphan's files: never reuse
                want = self.store.next_ctid(want + 1)
            if ctid is not None and self.store.find_instance(ctid) is None and self.node.bundle(ctid).exists():
                raise Conflict(f"CTID {ctid}: {self.node.bundle(ctid)} exists but no instance owns it (an orphan); "
                               "remove it or pick another CTID", ctid=ctid)
            try:
                row = self.store.add_instance(ctid=want, name=name, template=template, state=State.CREATING.value,
                                              hostname=hostname, init=manifest.init, stop_signal=manifest.stop_signal,
                                              limits=values, live={}, privileged=bool(privileged),
                                              owner=actor.name, tags=tags, description=description,
                                              quota_check=(lambda n, ram: self.users.check_quota(
                                                  actor.name, add_instances=1, ram_delta=values.get("ram", 0),
                                                  usage=(n, ram))) if quota else None,
                                              **({} if privileged else {"uid_base": "auto",
                                                                        "idmap_range": self._idmap_range()}))
                break
            except OpenVPSError as e:
                if ctid is not None or e.details.get("name") or e.code == "quota_exceeded":
                    raise
        if row is None:
            raise OpenVPSError("could not find a free CTID; pass one explicitly")
        try:   # IPAM in one store transaction: a taken or outside address answers 4xx now
            nics_made = self.node.networks.allocate(row["ctid"], nets, ipadd, nameservers, searchdomain)
            new_volumes = VolumeService(self.node).record(row["ctid"], mount_rows, actor)
        except Exception:
            self.store.delete_instance(row["ctid"])
            raise
        secret = {"ssh_keys": list(ssh_keys or []), "root_password": root_password, "new_volumes": new_volumes}

        def forget():
            self.store.delete_instance(row["ctid"])
            VolumeService(self.node).drop_new(new_volumes)    # volumes this create made go with it
        op = self._op("instance.create", row, {"template": template, "start": start, "nics": bool(nics_made)})
        op.on_cancel = forget
        try:
            return self.node.runner.submit(op, lambda o, p: self._do_create(o, p, secret))
        except Exception:
            forget()
            raise

    def _do_create(self, op: Operation, progress: Progress, secret: dict) -> dict:
        ctid, start = op.args["ctid"], op.args.get("start")
        row = self.store.get_instance(ctid)
        bundle = self.node.bundle(ctid)
        manifest = self.node.templates.get(row["template"])
        with Reverter() as undo:
            undo.add("forget the new volumes",
                     lambda: VolumeService(self.node).drop_new(secret.get("new_volumes", [])))
            undo.add("forget the instance", lambda: self.store.delete_instance(ctid))
            if manifest is None:
                raise NotFound(f"template {row['template']!r} was removed while creating")
            has_nics = op.args.get("nics")
            if has_nics is None:       # an operation queued by an older daemon
                has_nics = bool(self.node.netstore.nics(ctid))
            if has_nics and start:   # the rules load while we mount; attach waits for them
                undo.add("rules without the instance", self.node.networks._safe_rebuild)
                self.node.networks.rebuild_soon(ctid)
            lower = self.node.templates.rootfs(row["template"])
            progress(0.1, "cloning the template")
            undo.add("remove the instance files", lambda: self.node.storage.destroy(bundle))
            self.node.storage.create(bundle, lower, self._idmap(row), quota=row["limits"].get("diskspace", 0))
            rootfs = self.node.storage.mount(bundle, lower, self._idmap(row))

            def setup() -> None:
                progress(0.4, "setting up hostname and keys")
                try:
                    tsetup.setup_instance(rootfs, manifest, hostname=row["hostname"],
                                          ssh_keys=secret["ssh_keys"], root_password=secret["root_password"])
                    self.node.networks.write_dns(rootfs, ctid)
                except (ValueError, tsetup.SetupError) as e:
                    raise InvalidArgument(f"instance setup failed: {e}") from None
                faults.point("create.after_setup")
                if start:
                    self.node.event("instance.created", row)
            if start:   # the setup runs while runc creates the container (it needs only to precede the init)
                progress(0.7, "starting")
                row = self._start(ctid, has_nics=has_nics, mounted=True, meanwhile=setup, row=row)
            else:
                try:
                    setup()
                finally:
                    self.node.storage.unmount(bundle)
                if has_nics:
                    progress(0.6, "network rules")
                    undo.add("rules without the instance", self.node.networks._safe_rebuild)
                    self.node.networks.rebuild()
                row = self.store.update_instance(ctid, state=State.STOPPED.value, event="instance.created")
            undo.success()
        return {"instance": instance_view(self.node, row)}

    def _idmap_range(self) -> tuple[int, int, int]:
        cfg = self.node.config
        return cfg.idmap_base, cfg.idmap_size, ((1 << 32) - 2 - cfg.idmap_base) // cfg.idmap_size

    def _idmap(self, row: dict) -> tuple[int, int] | None:
        return None if row["privileged"] or row["uid_base"] is None else (row["uid_base"], self.node.config.idmap_size)

    # ---------------------------------------------------------------- lifecycle
    def _submit(self, action: str, ident, handler, args: dict | None = None, actor: Actor = ROOT) -> dict:
        row = self._row(ident, actor)
        check_transition(action, row["state"], row["name"])
        op = self._op(f"instance.{action}", row, args)

        def run(o: Operation, p: Progress):
            current = self.store.get_instance(o.args["ctid"])   # re-check under the lock
            check_transition(action, current["state"], current["name"])
            handler(o, p)
            after = self.store.find_instance(o.args["ctid"])
            return {"instance": instance_view(self.node, after)} if after else {}

        return self.node.runner.submit(op, run)

    def start(self, ident, actor: Actor = ROOT) -> dict:
        return self._submit("start", ident, lambda o, p: self._start(o.args["ctid"]), actor=actor)

    def stop(self, ident, *, timeout: int | None = None, force: bool = False, actor: Actor = ROOT) -> dict:
        timeout = self.node.config.stop_timeout if timeout is None else timeout
        if timeout < 0:
            raise InvalidArgument("timeout cannot be negative")
        return self._submit("stop", ident, lambda o, p: self._stop(o.args["ctid"], timeout, force, p),
                            {"timeout": timeout, "force": force}, actor=actor)

    def restart(self, ident, *, timeout: int | None = None, actor: Actor = ROOT) -> dict:
        timeout = self.node.config.stop_timeout if timeout is None else timeout

        def handler(o, p):
            self._stop(o.args["ctid"], timeout, False, p)
            p(0.6, "starting")
            self._start(o.args["ctid"])
        return self._submit("restart", ident, handler, {"timeout": timeout}, actor=actor)

    def suspend(self, ident, actor: Actor = ROOT) -> dict:
        def handler(o, p):
            self.node.runtime.pause(self.node.cid(o.args["ctid"]))
            self.store.update_instance(o.args["ctid"], state=State.SUSPENDED.value)
            self._event("instance.suspended", o.args["ctid"])
        return self._submit("suspend", ident, handler, actor=actor)

    def resume(self, ident, actor: Actor = ROOT) -> dict:
        def handler(o, p):
            self.node.runtime.resume(self.node.cid(o.args["ctid"]))
            self.store.update_instance(o.args["ctid"], state=State.RUNNING.value)
            self._event("instance.resumed", o.args["ctid"])
        return self._submit("resume", ident, handler, actor=actor)

    def destroy(self, ident, *, force: bool = False, actor: Actor = ROOT) -> dict:
        row = self._row(ident, actor)
        if not force:
            check_transition("destroy", row["state"], row["name"])
        elif row["state"] in (State.CREATING, State.DESTROYING):
            check_transition("destroy", row["state"], row["name"])
        op = self._op("instance.destroy", row, {"force": force})

        def run(o: Operation, p: Progress):
            ctid = o.args["ctid"]
            cur = self.store.get_instance(ctid)
            if cur["state"] in (State.RUNNING, State.SUSPENDED):
                if not force:
                    check_transition("destroy", cur["state"], cur["name"])
                self._stop(ctid, 0, True, p)
            self.store.update_instance(ctid, state=State.DESTROYING.value)
            self.node.runtime.delete(self.node.cid(ctid), force=True)
            self.node.networks.detach(ctid)
            VolumeService(self.node).detach(ctid)      # before any removal: never delete through a volume
            self.node.storage.destroy(self.node.bundle(ctid))
            self.store.delete_instance(ctid)      # its addresses, forwards and rules go with it
            self.node.networks.rebuild()
            self.node.event("instance.destroyed", cur)
            return {}
        return self.node.runner.submit(op, run)

    def _spec(self, row: dict, limits: dict | None = None, hostname: str | None = None,
              with_netns: bool = True) -> Spec:
        ctid = row["ctid"]
        values = limits or row["limits"]
        return Spec(cid=self.node.cid(ctid), bundle=self.node.bundle(ctid), hostname=hostname or row["hostname"],
                    limits=values, cgroup_path=self.node.cgroups.instance_path(str(ctid)), init=row["init"],
                    cpuset=self._cpuset(ctid, values.get("cpus", 0)),
                    log_path=self.node.config.log_dir / f"{ctid}.console.log",
                    netns=self.node.networks.netns_path(ctid) if with_netns else None, idmap=self._idmap(row),
                    mounts=self.node.lxcfs.oci_mounts() if self.node.lxcfs and self.node.lxcfs.running() else [],
                    cpu_shares=A.cpu_shares(values.get("cpuunits", 1000), values.get("cpuguarantee", 0),
                                            self.node.facts.cpus))

    def _cpuset(self, ctid: int, count: int) -> str:
        """Spread pinned instances: take the `count` CPUs that the fewest running instances use."""
        total = self.node.facts.cpus
        if not count or count >= total:
            return ""
        load = [0] * total
        for r in self.store.list_instances():
            if r["ctid"] != ctid and r["state"] in (State.RUNNING, State.SUSPENDED) and r["live"].get("cpuset"):
                for c in _parse_cpus(r["live"]["cpuset"]):
                    if c < total:
                        load[c] += 1
        chosen = sorted(sorted(range(total), key=lambda c: (load[c], c))[:count])
        return ",".join(map(str, chosen))

    def _start(self, ctid: int, has_nics: bool | None = None, mounted: bool = False, meanwhile=None,
               row: dict | None = None) -> dict:
        """Start a stopped instance; the row as it is now. create --start passes what it knows (its
        interfaces, its mounted root, its row) and its setup, run while runc creates the container."""
        row = row or self.store.get_instance(ctid)
        lower = self.node.templates.rootfs(row["template"])
        if not lower.is_dir():
            raise NotFound(f"template {row['template']!r} of instance {row['name']} is gone; rebuild it")
        spec = self._spec(row, with_netns=False)
        bundle = spec.bundle
        if has_nics is None:
            has_nics = bool(self.node.netstore.nics(ctid))
        with Reverter() as undo:
            undo.add("unmount", lambda: self.node.storage.unmount(bundle))
            if not mounted:
                self.node.storage.mount(bundle, lower, spec.idmap)
            vols = VolumeService(self.node)
            undo.add("unmount volumes", lambda: vols.detach(ctid))
            spec.mounts = list(spec.mounts) + vols.attach(row)
            undo.add("remove the network namespace", lambda: self.node.networks.detach(ctid))
            # runc makes the network namespace (owned by the instance's user namespace, so sysfs can be
            # mounted inside); we name and wire it between runc create and runc start
            self.node.networks.detach_stale(ctid)     # a stale name from a crash must not be reused
            undo.add("delete runtime state", lambda: self.node.runtime.delete(spec.cid, force=True))
            wire = (lambda pid: self.node.networks.attach(ctid, pid=pid)) if has_nics else None
            self.node.runtime.run(spec, before_start=wire, meanwhile=meanwhile)
            faults.point("start.after_run")
            row = self.store.update_instance(ctid, state=State.RUNNING.value, started_at=_now(),
                                             live={**row["limits"], "cpuset": spec.cpuset, "hostname": row["hostname"]},
                                             event="instance.started")
            undo.success()
        return row

    def _stop(self, ctid: int, timeout: int, force: bool, progress: Progress | None = None) -> None:
        row = self.store.get_instance(ctid)
        cid, rt = self.node.cid(ctid), self.node.runtime
        st = rt.state(cid)
        if st is not None and st["status"] != "stopped":
            if st["status"] == "paused":
                rt.resume(cid)   # a frozen init cannot handle its stop signal
            if not force and timeout > 0:
                if progress:
                    progress(0.2, f"asking init to stop ({row['stop_signal']})")
                rt.kill(cid, row["stop_signal"])
                force = not rt.wait_stopped(cid, timeout, pid=st["pid"])
            if force or timeout <= 0:
                if progress:
                    progress(0.5, "killing")
                rt.kill(cid, "SIGKILL")
                if not rt.wait_stopped(cid, 10, pid=st["pid"]):
                    raise DriverError(f"instance {row['name']} did not die after SIGKILL; see `openvps status`")
        rt.delete(cid, force=True)
        self.node.networks.detach(ctid)
        self.node.storage.unmount(self.node.bundle(ctid))
        VolumeService(self.node).detach(ctid)
        self.store.update_instance(ctid, state=State.STOPPED.value, live={})
        if row["state"] != State.STOPPED:
            self._event("instance.stopped", ctid)

    # ---------------------------------------------------------------- live changes
    def set(self, ident, *, limits: dict[str, Any] | None = None, hostname: str | None = None,
            save: bool = False, ipadd: list[str] | None = None, ipdel: list[str] | None = None,
            nameservers: list[str] | None = None, searchdomain: str | None = None,
            tags: dict | None = None, untag: list[str] | None = None,
            description: str | None = None, if_match: str | None = None, actor: Actor = ROOT) -> dict:
        row = self._row(ident, actor)
        check_if_match(if_match, instance_etag(row))
        meta = self._metadata(row, tags, untag, description)
        net_change = bool(ipadd or ipdel or nameservers or searchdomain is not None)
        if (meta is not None or net_change) and not (limits or hostname):
            if not net_change:
                return self._set_metadata(row, meta)
            if meta is not None:        # metadata is stored at once; the addresses need an operation
                self.store.update_instance(row["ctid"], **meta)
                self._event("instance.updated", row["ctid"])
            check_transition("set", row["state"], row["name"])
            return self._set_network(row, ipadd or [], ipdel or [], nameservers or None, searchdomain)
        check_transition("set", row["state"], row["name"])
        running = row["state"] in (State.RUNNING, State.SUSPENDED)
        if not (limits or hostname):
            raise InvalidArgument("nothing to change: give a limit (e.g. --ram 1G), --hostname, --ipadd/--ipdel, "
                                  "--nameserver, --searchdomain, --tag, --untag or --description")
        if net_change:
            raise InvalidArgument("change limits or the hostname separately from addresses and DNS "
                                  "(two `set` calls)")
        if not running and not save:
            raise InvalidArgument(f"instance {row['name']} is stopped: nothing to apply live; "
                                  "add --save to change its saved configuration")
        if (limits or {}).get("diskspace") is not None:
            raise InvalidArgument("diskspace is fixed when the instance is created (its image cannot be resized "
                                  "yet); create a new instance with the size you need", key="diskspace")
        if hostname is not None:
            validate_hostname(hostname)
            _hostname_needs_thawed(row)
        base = {k: row["live"].get(k, v) for k, v in row["limits"].items()} if running else row["limits"]
        live_values = L.validate(limits or {}, self.node.facts, base=base)
        saved_values = L.validate(limits or {}, self.node.facts, base=row["limits"])
        if save:
            self.users.check_quota(row["owner"], ram_delta=saved_values.get("ram", 0) - row["limits"].get("ram", 0))
        if limits:
            AccountingService(self.node).admit(row["name"], saved_values if save else live_values, old=row["limits"])
        op = self._op("instance.set", row, {"limits": limits or {}, "hostname": hostname, "save": save})

        def run(o: Operation, p: Progress):
            ctid = o.args["ctid"]
            cur = self.store.get_instance(ctid)
            check_transition("set", cur["state"], cur["name"])
            is_running = cur["state"] in (State.RUNNING, State.SUSPENDED)
            if hostname:
                _hostname_needs_thawed(cur)
            if is_running:
                self._apply_live(cur, live_values, hostname)
            elif hostname:
                self._write_hostname_offline(cur, hostname)
            if save:
                self.store.update_instance(ctid, limits=saved_values, **({"hostname": hostname} if hostname else {}))
            if meta is not None:
                self.store.update_instance(ctid, **meta)
            self._event("instance.updated", ctid)
            return {"instance": instance_view(self.node, self.store.get_instance(ctid))}
        return self.node.runner.submit(op, run)

    @staticmethod
    def _metadata(row: dict, tags: dict | None, untag: list[str] | None, description: str | None) -> dict | None:
        """New tags/description values (stored at once, no OS work), or None if unchanged."""
        if tags is None and not untag and description is None:
            return None
        out: dict[str, Any] = {}
        if tags is not None or untag:
            new = {**(row.get("tags") or {}), **validate_tags(tags or {})}
            for k in untag or []:
                new.pop(k, None)
            out["tags"] = validate_tags(new)
        if description is not None:
            out["description"] = validate_description(description)
        return out

    def _set_metadata(self, row: dict, meta: dict) -> dict:
        op = self._op("instance.set", row, {"metadata": sorted(meta)})

        def run(o: Operation, p: Progress):
            ctid = o.args["ctid"]
            self.store.update_instance(ctid, **meta)
            self._event("instance.updated", ctid)
            return {"instance": instance_view(self.node, self.store.get_instance(ctid))}
        return self.node.runner.submit(op, run)

    def _set_network(self, row: dict, ipadd: list[str], ipdel: list[str], nameservers, searchdomain) -> dict:
        """Addresses and DNS are always saved, and applied live when the instance runs (vzctl set
        --ipadd/--ipdel/--nameserver). The store changes now, so a taken address answers 409 at once."""
        apply = self.node.networks.change_addresses(row["ctid"], ipadd, ipdel, nameservers, searchdomain)
        op = self._op("instance.set", row, {"ipadd": ipadd, "ipdel": ipdel})

        def run(o: Operation, p: Progress):
            with Reverter() as undo:
                apply(undo)
                undo.success()
            return {"instance": instance_view(self.node, self.store.get_instance(o.args["ctid"]))}
        try:
            return self.node.runner.submit(op, run)
        except Exception:
            apply.revert()
            raise

    def _apply_live(self, row: dict, values: dict, hostname: str | None) -> None:
        ctid = row["ctid"]
        spec = self._spec(row, limits=values, hostname=hostname or row["live"].get("hostname"))
        spec.cpuset = self._cpuset(ctid, values.get("cpus", 0))
        self.node.runtime.update(spec.cid, spec)
        if hostname:
            tsetup.set_hostname(spec.rootfs, hostname)
            p = self.node.runtime.exec(spec.cid, ["hostname", hostname], tty=False,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, err = p.communicate(timeout=30)
            if p.returncode != 0:
                raise DriverError(f"could not set the hostname inside: {err.decode(errors='replace').strip()}")
        self.store.update_instance(ctid, live={**values, "cpuset": spec.cpuset,
                                               "hostname": hostname or row["live"].get("hostname", row["hostname"])})

    def _write_hostname_offline(self, row: dict, hostname: str) -> None:
        bundle = self.node.bundle(row["ctid"])
        rootfs = self.node.storage.mount(bundle, self.node.templates.rootfs(row["template"]), self._idmap(row))
        try:
            tsetup.set_hostname(rootfs, hostname)
        finally:
            self.node.storage.unmount(bundle)

    # ---------------------------------------------------------------- exec
    def exec_process(self, ident, argv: list[str], *, tty: bool, env: dict | None = None, actor: Actor = ROOT,
                     **popen) -> subprocess.Popen:
        row = self._row(ident, actor)
        check_transition("exec", row["state"], row["name"])
        if not argv:
            raise InvalidArgument("exec needs a command, e.g. `openvps exec web1 -- uname -a`")
        return self.node.runtime.exec(self.node.cid(row["ctid"]), argv, tty=tty, env=env, **popen)


def _hostname_needs_thawed(row: dict) -> None:
    if row["state"] == State.SUSPENDED:
        raise InvalidState(f"cannot change the hostname of instance {row['name']} while it is suspended; "
                           "resume it first", action="set", state=row["state"])


def _parse_cpus(text: str) -> list[int]:
    out: list[int] = []
    for part in filter(None, text.split(",")):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def _now():
    from ..store.models import utcnow
    return utcnow()




LIST_FIELDS = ("ctid", "name", "state", "template", "hostname", "init", "privileged", "uid_base", "limits",
               "limits_display", "ip", "created_at", "started_at", "updated_at", "owner", "description", "tags",
               "live")


def _encode_cursor(ctid: int) -> str:
    import base64
    return base64.urlsafe_b64encode(f"ctid:{ctid}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    import base64
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, n = raw.partition(":")
        if kind != "ctid" or not n.isdigit():
            raise ValueError
        return int(n)
    except Exception:
        raise InvalidArgument("cursor: not a cursor this API gave out; start again without it", field="cursor") from None
