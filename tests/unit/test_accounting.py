"""Accounting arithmetic (pure), cgroup v1/v2 counter reading from fixture trees, event detection,
overcommit admission and split, and the accounting service/API on the fakes."""
from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from openvps.api.app import create_app
from openvps.domain import accounting as A
from openvps.domain.errors import InsufficientResources
from openvps.drivers.cgroup import Cgroups
from openvps.service.accounting import AccountingService, EventWatcher, KernelLog

M, G = 1 << 20, 1 << 30
V1_UNLIMITED = 9223372036854771712


# ---------------------------------------------------------------- beancounter arithmetic
def rows(raw, **kw) -> dict:
    return {r.resource: r for r in A.beancounters(raw, **kw)}


def test_physpages_in_4k_pages_with_unlimited_as_long_max():
    r = rows({"mem_usage": 10 * M, "mem_max_usage": 30 * M, "mem_limit": 64 * M, "mem_soft_limit": V1_UNLIMITED,
              "mem_failcnt": 7})["physpages"]
    assert (r.held, r.maxheld, r.barrier, r.limit, r.failcnt) == (2560, 7680, 16384, 16384, 7)
    r = rows({"mem_usage": 4096, "mem_limit": None})["physpages"]
    assert r.limit == r.barrier == A.UNLIMITED == 9223372036854775807
    assert A.pages(V1_UNLIMITED) == A.UNLIMITED and A.pages(4095) == 0 and A.pages(None) == A.UNLIMITED


def test_swappages_from_memsw_minus_mem_v1():
    r = rows({"mem_usage": 60 * M, "mem_max_usage": 64 * M, "mem_limit": 64 * M, "memsw_usage": 100 * M,
              "memsw_max_usage": 150 * M, "memsw_limit": 192 * M, "memsw_failcnt": 3})["swappages"]
    assert r.held == 40 * M // 4096
    assert r.maxheld == (150 - 64) * M // 4096       # at the mem+swap peak, RAM held at most its limit
    assert r.limit == r.barrier == 128 * M // 4096 and r.failcnt == 3
    # no swap use: never negative
    r = rows({"mem_usage": 10 * M, "mem_limit": 64 * M, "memsw_usage": 10 * M, "memsw_limit": 64 * M})["swappages"]
    assert (r.held, r.maxheld, r.limit) == (0, 0, 0)
    r = rows({"mem_usage": 1, "mem_limit": None, "memsw_usage": 1, "memsw_limit": None})["swappages"]
    assert r.limit == A.UNLIMITED


def test_swappages_v2_has_its_own_counters():
    r = rows({"mem_usage": 1 * M, "mem_limit": 64 * M, "swap_usage": 8 * M, "swap_max_usage": 16 * M,
              "swap_limit": 128 * M, "swap_failcnt": 2})["swappages"]
    assert (r.held, r.maxheld, r.limit, r.failcnt) == (2048, 4096, 32768, 2)


def test_oomguarpages_numproc_kmem_cputhrottle():
    raw = {"mem_usage": 8 * M, "mem_limit": 64 * M, "oom_kill": 2, "kmem_usage": 5000, "kmem_max_usage": 9000,
           "kmem_limit": V1_UNLIMITED, "kmem_failcnt": 0, "pids_current": 5, "pids_limit": 64,
           "pids_max_events": 9, "nr_throttled": 11}
    r = rows(raw, guarantee=32 * M, cpulimit=50)
    assert r["oomguarpages"].barrier == 8192 and r["oomguarpages"].failcnt == 2 and r["oomguarpages"].held == 2048
    assert (r["kmemsize"].held, r["kmemsize"].maxheld, r["kmemsize"].limit) == (5000, 9000, A.UNLIMITED)
    n = r["numproc"]
    assert (n.held, n.maxheld, n.barrier, n.limit, n.failcnt) == (5, 5, 64, 64, 9)
    assert rows({**raw, "pids_limit": None, "pids_peak": 12})["numproc"].maxheld == 12
    assert rows({**raw, "pids_limit": None})["numproc"].limit == A.UNLIMITED
    assert (r["cputhrottle"].failcnt, r["cputhrottle"].limit) == (11, 50)
    assert [x.resource for x in A.beancounters(raw)] == ["physpages", "swappages", "kmemsize", "oomguarpages",
                                                          "numproc", "cputhrottle"]


def test_render_table_is_user_beancounters_style():
    text = A.render_table([(101, A.beancounters({"mem_usage": 4096, "mem_limit": None}))])
    lines = text.splitlines()
    assert lines[0] == "Version: 2.5"
    assert lines[1].split() == list(A.COLUMNS)
    assert lines[2].split() == ["101:", "physpages", "1", "1", str(A.UNLIMITED), str(A.UNLIMITED), "0"]
    assert lines[3].split()[0] == "swappages"          # uid only on an instance's first row


# ---------------------------------------------------------------- cgroup counters from fixture trees
def write_tree(base: Path, files: dict[str, str]) -> None:
    base.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (base / name).write_text(text)


V2_FILES = {   # as a real cgroup v2 leaf shows them (kernel 6.x)
    "memory.current": "10485760\n", "memory.peak": "67108864\n", "memory.max": "67108864\n",
    "memory.high": "max\n", "memory.events": "low 0\nhigh 0\nmax 1475\noom 3\noom_kill 2\noom_group_kill 0\n",
    "memory.swap.current": "0\n", "memory.swap.peak": "0\n", "memory.swap.max": "134217728\n",
    "memory.swap.events": "high 0\nmax 0\nfail 0\n",
    "memory.stat": "anon 1000\nfile 2000\nkernel 262144\nkernel_stack 16384\n",
    "pids.current": "3\n", "pids.max": "64\n", "pids.peak": "64\n", "pids.events": "max 17\n",
    "cpu.stat": "usage_usec 1000\nuser_usec 600\nsystem_usec 400\nnr_periods 50\nnr_throttled 20\n"
                "throttled_usec 900\n",
}


def test_cgroup_v2_counters_from_a_fixture_tree(tmp_path):
    root = tmp_path / "cg"
    write_tree(root, {"cgroup.controllers": "cpuset cpu io memory pids\n"})
    cg = Cgroups("/openvps-x", root=root)
    assert cg.version == 2
    write_tree(root / "openvps-x" / "101", V2_FILES)
    raw = cg.counters("101")
    assert raw["mem_usage"] == 10 * M and raw["mem_max_usage"] == 64 * M and raw["mem_limit"] == 64 * M
    assert raw["mem_soft_limit"] is None and raw["mem_failcnt"] == 1475 and raw["oom_kill"] == 2
    assert raw["swap_limit"] == 128 * M and raw["swap_failcnt"] == 0 and raw["kmem_usage"] == 262144
    assert (raw["pids_current"], raw["pids_limit"], raw["pids_peak"], raw["pids_max_events"]) == (3, 64, 64, 17)
    assert raw["nr_throttled"] == 20
    r = rows(raw)
    assert r["physpages"].limit == 16384 and r["physpages"].barrier == 16384 and r["physpages"].failcnt == 1475
    assert r["swappages"].limit == 32768 and r["oomguarpages"].failcnt == 2 and r["numproc"].maxheld == 64
    assert cg.watch("101") == {"mem_failcnt": 1475, "oom_kill": 2, "swap_failcnt": 0, "pids_max_events": 17}
    assert cg.reset("101") == []                    # v2 keeps no globally resettable peak/failcnt
    assert cg.counters("999") == {}
    (root / "openvps-x" / "101" / "pids.max").write_text("max\n")
    assert cg.counters("101")["pids_limit"] is None


def test_cgroup_v1_counters_watch_and_reset_from_a_fixture_tree(tmp_path):
    root = tmp_path / "cg"
    for h in ("memory", "pids", "cpu", "cpuacct"):
        write_tree(root / h, {"cgroup.procs": ""})
    cg = Cgroups("/mine/openvps-x", root=root)
    assert cg.version == 1
    write_tree(root / "memory" / "mine" / "openvps-x" / "101", {
        "memory.usage_in_bytes": "1048576\n", "memory.max_usage_in_bytes": "67108864\n",
        "memory.limit_in_bytes": "67108864\n", "memory.soft_limit_in_bytes": f"{V1_UNLIMITED}\n",
        "memory.failcnt": "1475\n", "memory.memsw.usage_in_bytes": "1048576\n",
        "memory.memsw.max_usage_in_bytes": "67108864\n", "memory.memsw.limit_in_bytes": "201326592\n",
        "memory.memsw.failcnt": "0\n", "memory.kmem.usage_in_bytes": "262144\n",
        "memory.kmem.max_usage_in_bytes": "720896\n", "memory.kmem.limit_in_bytes": f"{V1_UNLIMITED}\n",
        "memory.kmem.failcnt": "0\n", "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"})
    write_tree(root / "pids" / "mine" / "openvps-x" / "101",
               {"pids.current": "4\n", "pids.max": "max\n", "pids.events": "max 0\n"})
    write_tree(root / "cpu" / "mine" / "openvps-x" / "101",
               {"cpu.stat": "nr_periods 10\nnr_throttled 3\nthrottled_time 99\n"})
    raw = cg.counters("101")
    r = rows(raw)
    assert r["physpages"].failcnt == 1475 and r["physpages"].barrier == 16384 and r["oomguarpages"].failcnt == 2
    assert r["swappages"].limit == 32768 and r["kmemsize"].limit == A.UNLIMITED
    assert r["numproc"].limit == A.UNLIMITED and r["cputhrottle"].held == 3
    assert cg.watch("101") == {"mem_failcnt": 1475, "memsw_failcnt": 0, "oom_kill": 2, "pids_max_events": 0}
    done = cg.reset("101")
    assert "memory.failcnt" in done and "memory.max_usage_in_bytes" in done
    assert cg.read("memory", "101", "memory.failcnt") == "0"


# ---------------------------------------------------------------- events
LIMITS = {"ram": 64 * M, "swap": 128 * M, "pids": 64}


def test_detect_oom_kill_names_the_process_and_advises():
    ev = A.detect({"oom_kill": 0, "mem_failcnt": 10}, {"oom_kill": 1, "mem_failcnt": 1475}, name="web1",
                  limits=LIMITS, processes=["dd (pid 42)"])
    assert len(ev) == 1                         # the RAM hits that led to the kill are part of it
    e = ev[0]
    assert (e.resource, e.kind, e.count, e.process) == ("oomguarpages", "oom_kill", 1, "dd (pid 42)")
    assert "dd (pid 42)" in e.message and "64M + 128M" in e.message and "raise --ram or --swap" in e.advice


def test_detect_without_kernel_log_says_unknown():
    (e,) = A.detect({}, {"oom_kill": 2}, name="web1", limits=LIMITS)
    assert "unknown" in e.message and e.count == 2 and e.process == ""


def test_detect_limit_hits_and_ignores_steady_or_reset_counters():
    ev = A.detect({"mem_failcnt": 1, "pids_max_events": 0, "oom_kill": 0},
                  {"mem_failcnt": 5, "pids_max_events": 3, "oom_kill": 0}, name="w", limits=LIMITS)
    assert {(e.resource, e.count) for e in ev} == {("physpages", 4), ("numproc", 3)}
    assert "--pids" in next(e for e in ev if e.resource == "numproc").advice
    assert A.detect({"mem_failcnt": 5}, {"mem_failcnt": 5}, name="w", limits=LIMITS) == []
    assert A.detect({"mem_failcnt": 5}, {"mem_failcnt": 0}, name="w", limits=LIMITS) == []   # reset


def test_kernel_log_oom_lines_are_matched_to_the_instance_cgroup():
    lines = [
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=101,mems_allowed=0,oom_memcg=/p/openvps-x/101,"
        "task_memcg=/p/openvps-x/101,task=dd,pid=2729,uid=0",
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),oom_memcg=/p/openvps-x/1010,"
        "task_memcg=/p/openvps-x/1010,task=other,pid=1,uid=0",
        "Memory cgroup out of memory: Killed process 2729 (dd)",
    ]
    assert A.kills_in(lines, "/p/openvps-x/101") == ["dd (pid 2729)"]
    assert A.parse_oom_kill_line("nothing") is None


def test_kernel_log_reader_reads_each_record_once(tmp_path):
    f = tmp_path / "kmsg"
    f.write_text("6,1,100,-;old line\n")
    k = KernelLog(str(f))          # skips what was there
    assert k.last_seq == 1
    with f.open("a") as fh:
        fh.write("3,2,200,-;oom-kill:task_memcg=/a,task=x,pid=3\n")
    # a plain file reads as one chunk: good enough to show the seq filter works record by record
    k2 = KernelLog(str(tmp_path / "missing"))
    assert k2.new_lines() == [] and k2.readable is False


# ---------------------------------------------------------------- overcommit
def test_capacity_admission_and_free_to_promise():
    inst = [{"name": "a", "limits": {"ram": 1 * G, "swap": 1 * G, "guarantee": 0}},
            {"name": "b", "limits": {"ram": 2 * G, "swap": 0, "guarantee": 512 * M}}]
    cap = A.capacity(4 * G, 0, 1.0, inst)
    assert cap["guarantees"] == 1 * G + 512 * M and cap["limits"] == 4 * G
    assert cap["free_to_promise"] == 4 * G - (1 * G + 512 * M) and cap["promisable"] == 4 * G
    A.admit(cap, 2 * G)                                 # fits
    with pytest.raises(InsufficientResources) as e:
        A.admit(cap, 3 * G, name="c")
    assert e.value.status == 409 and "free to promise" in e.value.message and "overcommit_ratio" in e.value.message
    # raising an existing guarantee counts only the difference; lowering always passes
    A.admit(cap, 3 * G, old_guarantee=1 * G)
    A.admit(A.capacity(1 * G, 0, 0.1, inst), 1, old_guarantee=1 * G)
    assert A.capacity(4 * G, 4 * G, 1.5, [])["promisable"] == 12 * G


def test_split_shares_the_node_evenly():
    s = A.split(4, 8 * G, 2 * G, 4)
    assert s["node_reserve"] == 8 * G // 20 and s["ram"] == (8 * G - 8 * G // 20) // 4 // M * M
    assert s["ram"] * 4 + s["node_reserve"] <= 8 * G and s["swap"] == 512 * M and s["cpuguarantee"] == 100
    assert s["guarantee"] == s["ram"]
    with pytest.raises(InsufficientResources):
        A.split(10_000, 1 * G, 0, 1)
    with pytest.raises(ValueError):
        A.split(0, 1 * G, 0, 1)


def test_cpu_shares_guarantee_raises_the_weight():
    assert A.cpu_shares(1000, 0, 2) == 1024
    assert A.cpu_shares(1000, 20, 2) == int(0.1 * 262144)
    assert A.cpu_shares(500000, 1, 4) == 512000 and A.cpu_shares(8, 0, 1) == 8


# ---------------------------------------------------------------- service and API on the fakes
def leaf(node, ctid: int) -> Path:
    return node.cgroups.path("", str(ctid))


def test_admission_control_refuses_create_and_set(node, svc, make, wait):
    node.config.overcommit_ratio = 0.5                  # FACTS: 8G RAM, no swap -> 4G may be promised
    make("a", limits={"ram": "2G"})
    make("b", limits={"ram": "1G", "guarantee": "512M"})
    with pytest.raises(InsufficientResources) as e:
        svc.create(name="c", template="minimal", limits={"ram": "2G"})
    assert "1.5G is free to promise" in e.value.message
    assert [i["name"] for i in svc.list()] == ["a", "b"]
    with pytest.raises(InsufficientResources):
        svc.set("a", limits={"ram": "4G"}, save=True)
    assert wait(svc.set("a", limits={"ram": "1G"}, save=True))["status"] == "success"
    cap = AccountingService(node).capacity()
    assert cap["guarantees"] == 1 * G + 512 * M and cap["free_to_promise"] == 4 * G - cap["guarantees"]


def test_beancounters_events_capacity_split_over_the_api(node, make):
    inst = make("web1", start=True, limits={"ram": "64M", "swap": "128M", "pids": 64})
    write_tree(leaf(node, inst["ctid"]), V2_FILES)
    with TestClient(create_app(node)) as c:
        bc = c.get("/1.0/instances/web1/beancounters").json()
        assert bc["version"] == "2.5" and bc["ctid"] == inst["ctid"]
        r = {x["resource"]: x for x in bc["rows"]}
        assert r["physpages"]["failcnt"] == 1475 and r["oomguarpages"]["barrier"] == 16384
        assert len(c.get("/1.0/beancounters").json()) == 1
        op = c.post("/1.0/instances/web1/beancounters/reset")
        assert op.status_code == 202
        done = c.get(op.headers["location"] + "/wait", params={"timeout": 10}).json()
        assert done["status"] == "success" and done["result"]["reset"] == []
        assert c.get("/1.0/instances/nope/beancounters").status_code == 404

        # the watcher: a new OOM kill and pids hits since the last poll become events
        w = EventWatcher(node, kernel_log=KernelLog("/nonexistent"))
        w.since = w.since.replace(year=2999)            # the instance started before the watcher
        assert w.poll() == []                           # first sight: baseline
        (leaf(node, inst["ctid"]) / "memory.events").write_text("max 1500\noom 4\noom_kill 3\n")
        (leaf(node, inst["ctid"]) / "pids.events").write_text("max 20\n")
        got = w.poll()
        assert {(e["resource"], e["kind"]) for e in got} == {("oomguarpages", "oom_kill"), ("numproc", "limit_hit")}
        assert w.poll() == []
        ev = c.get("/1.0/instances/web1/events").json()
        assert ev[0]["instance"] == "web1" and {e["kind"] for e in ev} == {"oom_kill", "limit_hit"}
        assert len(c.get("/1.0/limit-events").json()) == 2
        # and they are in the one event stream too, beside lifecycle events
        stream = node.store.events_after(0, ["instance.limit"], None, 100)
        assert {e["data"]["kind"] for e in stream} == {"oom_kill", "limit_hit"}

        cap = c.get("/1.0/node/capacity").json()
        assert cap["guarantees"] == 64 * M and cap["per_instance"][0]["limit"] == 192 * M
        assert c.get("/1.0/node/split", params={"n": 2}).json()["instances"] == 2
        assert c.get("/1.0/node/split", params={"n": 0}).status_code == 400


def test_cpuguarantee_reaches_the_runtime_as_cpu_shares(node, runtime, make):
    make("g", start=True, limits={"cpuguarantee": 100})
    spec = runtime.runs[-1]
    assert spec.cpu_shares == A.cpu_shares(1000, 100, node.facts.cpus)
    assert spec.mounts == []                             # no lxcfs on the fakes


def test_diskspace_goes_to_storage_at_create_and_is_fixed_afterwards(node, storage, svc, make):
    inst = make("d", limits={"diskspace": "1G"})
    assert storage.quotas[node.bundle(inst["ctid"])] == G
    assert inst["limits_display"]["diskspace"] == "1G"
    from openvps.domain.errors import InvalidArgument
    with pytest.raises(InvalidArgument) as e:
        svc.set("d", limits={"diskspace": "2G"}, save=True)
    assert "fixed" in e.value.message
    with pytest.raises(InvalidArgument):
        svc.create(name="tiny", template="minimal", limits={"diskspace": "1M"})
