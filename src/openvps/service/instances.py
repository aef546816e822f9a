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
from ..domain.instance import State, check_transition, parse_ident, validate_ctid, validate_hostname, validate_name
from ..drivers.runtime import Spec
from .. import faults
from ..drivers.templates import base as tbase
from ..drivers.templates import setup as tsetup
from ..domain import accounting as A
from .accounting import AccountingService
from .node import Node
from .ops import Operation, Progress, Reverter
from .views import instance_view

log = logging.getLogger("openvps.instances")


class InstanceService:
    def __init__(self, node: Node):
        self.node = node
        self.store = node.store

    # ---------------------------------------------------------------- queries
    def get(self, ident: str | int) -> dict:
        return instance_view(self.node, self.store.get_instance(parse_ident(ident)), detail=True)

    def list(self) -> list[dict]:
        return [instance_view(self.node, r) for r in self.store.list_instances()]

    def _row(self, ident) -> dict:
        return self.store.get_instance(parse_ident(ident))

    def _op(self, kind: str, row: dict, args: dict | None = None) -> Operation:
        return Operation(kind=kind, target=row["name"], args={"ctid": row["ctid"], **(args or {})},
                         lock=f"instance:{row['ctid']}")

    # ---------------------------------------------------------------- create
    def create(self, *, name: str, template: str, ctid: int | None = None, hostname: str | None = None,
               limits: dict[str, Any] | None = None, ssh_keys: list[str] | None = None,
               root_password: str | None = None, start: bool = False) -> dict:
        validate_name(name)
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
                                              limits=values, live={})
                break
            except OpenVPSError as e:
                if ctid is not None or e.details.get("name"):
                    raise
        if row is None:
            raise OpenVPSError("could not find a free CTID; pass one explicitly")
        secret = {"ssh_keys": list(ssh_keys or []), "root_password": root_password}
        op = self._op("instance.create", row, {"template": template, "start": start})
        try:
            return self.node.runner.submit(op, lambda o, p: self._do_create(o, p, secret))
        except Exception:
            self.store.delete_instance(row["ctid"])
            raise

    def _do_create(self, op: Operation, progress: Progress, secret: dict) -> dict:
        ctid = op.args["ctid"]
        row = self.store.get_instance(ctid)
        bundle = self.node.bundle(ctid)
        manifest = self.node.templates.get(row["template"])
        with Reverter() as undo:
            undo.add("forget the instance", lambda: self.store.delete_instance(ctid))
            if manifest is None:
                raise NotFound(f"template {row['template']!r} was removed while creating")
            lower = self.node.templates.rootfs(row["template"])
            progress(0.1, "cloning the template")
            undo.add("remove the instance files", lambda: self.node.storage.destroy(bundle))
            self.node.storage.create(bundle, lower, quota=row["limits"].get("diskspace", 0))
            rootfs = self.node.storage.mount(bundle, lower)
            try:
                progress(0.4, "setting up hostname and keys")
                tsetup.setup_instance(rootfs, manifest, hostname=row["hostname"],
                                      ssh_keys=secret["ssh_keys"], root_password=secret["root_password"])
            except (ValueError, tsetup.SetupError) as e:
                raise InvalidArgument(f"instance setup failed: {e}") from None
            finally:
                if not op.args.get("start"):
                    self.node.storage.unmount(bundle)
            faults.point("create.after_setup")
            self.store.update_instance(ctid, state=State.STOPPED.value)
            if op.args.get("start"):
                progress(0.7, "starting")
                self._start(ctid)
            undo.success()
        return {"instance": instance_view(self.node, self.store.get_instance(ctid))}

    # ---------------------------------------------------------------- lifecycle
    def _submit(self, action: str, ident, handler, args: dict | None = None) -> dict:
        row = self._row(ident)
        check_transition(action, row["state"], row["name"])
        op = self._op(f"instance.{action}", row, args)

        def run(o: Operation, p: Progress):
            current = self.store.get_instance(o.args["ctid"])   # re-check under the lock
            check_transition(action, current["state"], current["name"])
            handler(o, p)
            after = self.store.find_instance(o.args["ctid"])
            return {"instance": instance_view(self.node, after)} if after else {}

        return self.node.runner.submit(op, run)

    def start(self, ident) -> dict:
        return self._submit("start", ident, lambda o, p: self._start(o.args["ctid"]))

    def stop(self, ident, *, timeout: int | None = None, force: bool = False) -> dict:
        timeout = self.node.config.stop_timeout if timeout is None else timeout
        if timeout < 0:
            raise InvalidArgument("timeout cannot be negative")
        return self._submit("stop", ident, lambda o, p: self._stop(o.args["ctid"], timeout, force, p),
                            {"timeout": timeout, "force": force})

    def restart(self, ident, *, timeout: int | None = None) -> dict:
        timeout = self.node.config.stop_timeout if timeout is None else timeout

        def handler(o, p):
            self._stop(o.args["ctid"], timeout, False, p)
            p(0.6, "starting")
            self._start(o.args["ctid"])
        return self._submit("restart", ident, handler, {"timeout": timeout})

    def suspend(self, ident) -> dict:
        def handler(o, p):
            self.node.runtime.pause(self.node.cid(o.args["ctid"]))
            self.store.update_instance(o.args["ctid"], state=State.SUSPENDED.value)
        return self._submit("suspend", ident, handler)

    def resume(self, ident) -> dict:
        def handler(o, p):
            self.node.runtime.resume(self.node.cid(o.args["ctid"]))
            self.store.update_instance(o.args["ctid"], state=State.RUNNING.value)
        return self._submit("resume", ident, handler)

    def destroy(self, ident, *, force: bool = False) -> dict:
        row = self._row(ident)
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
            self.node.storage.destroy(self.node.bundle(ctid))
            self.store.delete_instance(ctid)
            return {}
        return self.node.runner.submit(op, run)

    def _spec(self, row: dict, limits: dict | None = None, hostname: str | None = None) -> Spec:
        ctid = row["ctid"]
        values = limits or row["limits"]
        return Spec(cid=self.node.cid(ctid), bundle=self.node.bundle(ctid), hostname=hostname or row["hostname"],
                    limits=values, cgroup_path=self.node.cgroups.instance_path(str(ctid)), init=row["init"],
                    cpuset=self._cpuset(ctid, values.get("cpus", 0)),
                    log_path=self.node.config.log_dir / f"{ctid}.console.log",
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

    def _start(self, ctid: int) -> None:
        row = self.store.get_instance(ctid)
        lower = self.node.templates.rootfs(row["template"])
        if not lower.is_dir():
            raise NotFound(f"template {row['template']!r} of instance {row['name']} is gone; rebuild it")
        spec = self._spec(row)
        bundle = spec.bundle
        with Reverter() as undo:
            undo.add("unmount", lambda: self.node.storage.unmount(bundle))
            self.node.storage.mount(bundle, lower)
            undo.add("delete runtime state", lambda: self.node.runtime.delete(spec.cid, force=True))
            self.node.runtime.run(spec)
            faults.point("start.after_run")
            self.store.update_instance(ctid, state=State.RUNNING.value, started_at=_now(),
                                       live={**row["limits"], "cpuset": spec.cpuset, "hostname": row["hostname"]})
            undo.success()

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
                force = not rt.wait_stopped(cid, timeout)
            if force or timeout <= 0:
                if progress:
                    progress(0.5, "killing")
                rt.kill(cid, "SIGKILL")
                if not rt.wait_stopped(cid, 10):
                    raise DriverError(f"instance {row['name']} did not die after SIGKILL; see `openvps status`")
        rt.delete(cid, force=True)
        self.node.storage.unmount(self.node.bundle(ctid))
        self.store.update_instance(ctid, state=State.STOPPED.value, live={})

    # ---------------------------------------------------------------- live changes
    def set(self, ident, *, limits: dict[str, Any] | None = None, hostname: str | None = None,
            save: bool = False) -> dict:
        row = self._row(ident)
        check_transition("set", row["state"], row["name"])
        running = row["state"] in (State.RUNNING, State.SUSPENDED)
        if not (limits or hostname):
            raise InvalidArgument("nothing to change: give a limit (e.g. --ram 1G) or --hostname")
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
            return {"instance": instance_view(self.node, self.store.get_instance(ctid))}
        return self.node.runner.submit(op, run)

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
        rootfs = self.node.storage.mount(bundle, self.node.templates.rootfs(row["template"]))
        try:
            tsetup.set_hostname(rootfs, hostname)
        finally:
            self.node.storage.unmount(bundle)

    # ---------------------------------------------------------------- exec
    def exec_process(self, ident, argv: list[str], *, tty: bool, env: dict | None = None, **popen) -> subprocess.Popen:
        row = self._row(ident)
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


