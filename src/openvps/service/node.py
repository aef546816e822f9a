"""The node: the daemon's context (config, store, drivers, runner) and start-up reconciliation."""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from ..config import Config, own_memory_cgroup
from ..domain.instance import State
from ..domain.limits import NodeFacts
from ..drivers.cgroup import Cgroups
from ..drivers.network import NetworkDriver, get_network
from ..drivers.runtime import Runtime, get_runtime
from ..drivers.storage import Storage, get_storage
from ..drivers.templates.cache import TemplateCache
from ..store.db import Store, instance_event
from ..store.netstore import NetStore
from .ops import Runner

log = logging.getLogger("openvps.node")


def node_facts() -> NodeFacts:
    mem = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            mem[k] = int(v.split()[0]) * 1024
    return NodeFacts(ram_bytes=mem["MemTotal"], swap_bytes=mem.get("SwapTotal", 0), cpus=os.cpu_count() or 1)


class Node:
    def __init__(self, config: Config, *, runtime: Runtime | None = None, storage: Storage | None = None,
                 cgroups: Cgroups | None = None, facts: NodeFacts | None = None,
                 network: NetworkDriver | None = None):
        self.config = config
        for d in (config.home_path, config.instances_dir, config.log_dir, Path(config.template_dir)):
            d.mkdir(parents=True, exist_ok=True)
        # others may traverse (not list): an unprivileged instance's root must reach its own bundle
        os.chmod(config.home_path, 0o711)
        os.chmod(config.instances_dir, 0o711)
        self.store = Store(config.database_url)
        self.runtime = runtime or get_runtime(config.runtime, root=config.runc_root, binary=config.runc_binary)
        self.storage = storage or get_storage(config.storage)
        self.cgroups = cgroups or Cgroups(config.cgroup_parent)
        self.templates = TemplateCache(Path(config.template_dir))
        self.facts = facts or node_facts()
        self.runner = Runner(self.store, workers=config.workers)
        self.orphans: list[str] = []
        self.netstore = NetStore(self.store)
        self.network = network or get_network(config.network, node_netns=config.node_netns,
                                              home_id=config.home_id, uplink=config.uplink)
        from .networks import NetworkService
        self.networks = NetworkService(self)
        self.lxcfs = None                  # the node's lxcfs (drivers/lxcfs.py) once start_background ran
        self.background: list = []         # helpers with a stop(): event watcher, lxcfs supervisor

    def event(self, type: str, row: dict | None = None, **data) -> None:
        """Record a lifecycle event (best effort: an event never fails the work it reports)."""
        try:
            _, instance, extra = instance_event(type)(row) if row else (type, None, {})
            self.store.add_event(type, instance, {**extra, **data})
        except Exception:
            log.exception("could not record event %s", type)

    def start_background(self) -> None:
        """The daemon's helpers (lxcfs if enabled, the limit/OOM event watcher); Node.close stops them."""
        from .accounting import start_background
        self.background = start_background(self)
        from .samples import Sampler     # the dashboard's graphs: round-robin samples per instance
        self.background.append(Sampler(self).start())

    def bundle(self, ctid: int) -> Path:
        return self.config.instances_dir / str(ctid)

    def cid(self, ctid: int) -> str:
        return str(ctid)

    def info(self) -> dict:
        return {
            "hostname": socket.gethostname(),
            "home": str(self.config.home_path),
            "ram": self.facts.ram_bytes, "swap": self.facts.swap_bytes, "cpus": self.facts.cpus,
            "runtime": self.runtime.name, "runtime_capabilities": sorted(self.runtime.capabilities),
            "storage": self.storage.name, "storage_capabilities": sorted(self.storage.capabilities),
            "network": self.network.name, "node_netns": self.config.node_netns, "uplink": self.config.uplink,
            "public_pool": self.config.public_pool,
            "cgroup_version": self.cgroups.version, "cgroup_parent": self.cgroups.parent,
            "template_dir": self.config.template_dir,
            "instances": self.store.count_instances(),
            "orphans": self.orphans,
        }

    def close(self) -> None:
        for helper in reversed(self.background):
            try:
                helper.stop()
            except Exception:
                log.exception("stopping %s failed", type(helper).__name__)
        self.background = []
        self.runner.shutdown()
        self.networks.shutdown()
        self.cgroups.prune(ancestors=own_memory_cgroup())
        self.store.close()

    # ---- crash-only start: make the store agree with what really runs
    def reconcile(self) -> dict:
        report = {"rolled_back": [], "destroyed": [], "stopped": [], "adopted": [], "orphans": [], "operations": 0}
        for op in self.store.list_operations(limit=10_000):
            if op["status"] in ("pending", "running"):
                self.store.update_operation(op["id"], status="failure", message="the daemon stopped during this operation",
                                            error={"code": "interrupted", "details": {},
                                                   "message": "the daemon stopped during this operation; run it again"})
                report["operations"] += 1
        self.network_report = self.networks.setup()     # kept apart: the report's shape is the engine's
        running = self.runtime.list()
        known = set()
        for inst in self.store.list_instances():
            ctid, cid = inst["ctid"], self.cid(inst["ctid"])
            known.add(cid)
            rt = running.get(cid)
            alive = rt is not None and rt["status"] in ("running", "paused")
            if inst["state"] in (State.CREATING, State.DESTROYING):
                self._remove_everything(ctid)
                self.store.delete_instance(ctid)
                report["rolled_back" if inst["state"] == State.CREATING else "destroyed"].append(inst["name"])
            elif alive:
                state = State.SUSPENDED if rt["status"] == "paused" else State.RUNNING
                if inst["state"] != state:
                    self.store.update_instance(ctid, state=state.value)
                    report["adopted"].append(inst["name"])
            else:
                if inst["state"] != State.STOPPED:
                    report["stopped"].append(inst["name"])
                self.runtime.delete(cid, force=True)
                self.network.detach(ctid)
                self.storage.unmount(self.bundle(ctid))
                self._detach_volumes(ctid)
                self.store.update_instance(ctid, state=State.STOPPED.value, live={})
        # runc state without a store row: report, never delete (it may be an operator's)
        report["orphans"] = sorted(set(running) - known)
        self.orphans = [f"runtime container {c} has no instance in the store" for c in report["orphans"]]
        for d in sorted(self.config.instances_dir.iterdir()):
            if d.name.isdigit() and d.name not in known:
                self.orphans.append(f"instance directory {d} has no instance in the store")
        for line in self.orphans:
            log.warning("orphan: %s", line)
        self.network_report.update(self.networks.reconcile())
        log.info("network reconciled: %s", self.network_report)
        return report

    def _remove_everything(self, ctid: int) -> None:
        self.runtime.delete(self.cid(ctid), force=True)
        self.network.detach(ctid)
        self._detach_volumes(ctid)
        self.storage.destroy(self.bundle(ctid))

    def _detach_volumes(self, ctid: int) -> None:
        from .volumes import VolumeService     # issue 7: idmapped views of volumes and bind mounts
        VolumeService(self).detach(ctid)
