"""THE limits table (domain/limits.py): defaults, parsing, ranges against the node, rendering, schema."""
from __future__ import annotations

import pytest

from openvps.domain import limits as L
from openvps.domain.errors import InvalidArgument
from openvps.domain.limits import LIMITS, NodeFacts

M, G = 1 << 20, 1 << 30
NODE = NodeFacts(ram_bytes=8 * G, swap_bytes=2 * G, cpus=4)


def test_table_rows_are_complete():
    assert list(LIMITS) == ["ram", "swap", "cpus", "cpuunits", "cpulimit", "cpuguarantee", "guarantee",
                            "diskspace", "pids"]
    for key, lim in LIMITS.items():
        assert lim.key == key
        assert lim.kind in ("size", "int", "percent")
        assert lim.help and lim.cgroup and lim.alias, key


def test_defaults():
    assert L.defaults() == {"ram": 512 * M, "swap": 512 * M, "cpus": 0, "cpuunits": 1000, "cpulimit": 0,
                            "cpuguarantee": 0, "guarantee": 0, "diskspace": 0, "pids": 4096}


def test_validate_empty_gives_defaults():
    assert L.validate({}, NODE) == L.defaults()


def test_validate_parses_and_merges_over_defaults():
    out = L.validate({"ram": "1.5G", "swap": "0", "cpus": "2", "cpulimit": "150%", "pids": 100}, NODE)
    assert out == {**L.defaults(), "ram": G + G // 2, "swap": 0, "cpus": 2, "cpulimit": 150, "pids": 100}


def test_validate_merges_over_base_and_skips_none():
    base = {**L.defaults(), "ram": 2 * G}
    out = L.validate({"swap": "1G", "ram": None}, NODE, base=base)
    assert out["ram"] == 2 * G and out["swap"] == G
    assert base["swap"] == 512 * M            # the base is not modified


def test_unknown_key():
    with pytest.raises(InvalidArgument) as e:
        L.validate({"memory": "1G"}, NODE)
    assert "unknown limit 'memory'" in e.value.message
    assert "ram, swap, cpus" in e.value.message
    assert e.value.details == {"key": "memory"}


@pytest.mark.parametrize("key,value,minimum", [
    ("ram", "15M", 16 * M), ("cpuunits", 7, 8), ("pids", 15, 16), ("pids", -1, 16),
])
def test_below_minimum(key, value, minimum):
    with pytest.raises(InvalidArgument) as e:
        L.validate({key: value}, NODE)
    assert "below the minimum" in e.value.message
    assert e.value.details == {"key": key, "minimum": minimum}


@pytest.mark.parametrize("key,value", [("ram", "16M"), ("cpuunits", 8), ("pids", 16), ("swap", 0)])
def test_minimum_itself_is_allowed(key, value):
    assert L.validate({key: value}, NODE)[key] == LIMITS[key].parse(value)


@pytest.mark.parametrize("key,top,over", [
    ("ram", 10 * G, "10241M"),          # node RAM + swap
    ("swap", 10 * G, "11G"),
    ("cpus", 4, 5),
    ("cpulimit", 400, 401),             # 100% per CPU
    ("cpuunits", 500000, 500001),
    ("pids", 4194304, 4194305),
])
def test_maximum_against_node(key, top, over):
    assert L.validate({key: top}, NODE)[key] == top
    with pytest.raises(InvalidArgument) as e:
        L.validate({key: over}, NODE)
    assert "more than this node has" in e.value.message
    assert e.value.details == {"key": key, "maximum": top}


def test_maximum_follows_the_node():
    small = NodeFacts(ram_bytes=G, swap_bytes=0, cpus=1)
    with pytest.raises(InvalidArgument):
        L.validate({"ram": "2G"}, small)
    with pytest.raises(InvalidArgument):
        L.validate({"cpus": 2}, small)
    assert L.validate({"ram": "2G", "cpus": 2}, NODE)["cpus"] == 2


@pytest.mark.parametrize("key", ["cpus", "cpulimit", "pids"])
def test_zero_means(key):
    """0 is allowed for keys whose 0 has a meaning, even below their minimum (pids: 16)."""
    assert L.validate({key: 0}, NODE)[key] == 0
    assert LIMITS[key].render(0) == LIMITS[key].zero_means


@pytest.mark.parametrize("key", ["cpus", "cpulimit"])
def test_negative_message_names_the_real_minimum(key):
    with pytest.raises(InvalidArgument) as e:
        L.validate({key: -1}, NODE)
    assert LIMITS[key].zero_means not in e.value.message


@pytest.mark.parametrize("key,bad", [("cpus", "two"), ("pids", True), ("cpulimit", "1.5"), ("cpuunits", "")])
def test_int_parse_errors(key, bad):
    with pytest.raises(InvalidArgument) as e:
        L.validate({key: bad}, NODE)
    assert "expected a whole number" in e.value.message


def test_size_parse_error_names_the_key():
    with pytest.raises(InvalidArgument) as e:
        L.validate({"swap": "lots"}, NODE)
    assert e.value.message.startswith("swap: ")


@pytest.mark.parametrize("key,value,text", [
    ("ram", 512 * M, "512M"), ("ram", G + G // 2, "1.5G"), ("swap", 0, "0"), ("cpus", 0, "all"),
    ("cpus", 2, "2"), ("cpulimit", 0, "unlimited"), ("cpulimit", 150, "150%"), ("pids", 0, "unlimited"),
    ("pids", 4096, "4096"), ("cpuunits", 1000, "1000"), ("ram", None, "-"),
])
def test_render(key, value, text):
    assert LIMITS[key].render(value) == text


def test_render_all_skips_unknown_keys():
    values = {**L.defaults(), "cpuset": "0,1"}
    assert L.render_all(values) == {"ram": "512M", "swap": "512M", "cpus": "all", "cpuunits": "1000",
                                    "cpulimit": "unlimited", "cpuguarantee": "none",
                                    "guarantee": "ram", "diskspace": "unlimited", "pids": "4096"}


def test_schema_comes_from_the_table():
    s = L.schema()
    assert set(s) == set(LIMITS)
    for key, lim in LIMITS.items():
        assert s[key]["description"] == lim.help
        assert s[key]["default"] == lim.default and s[key]["minimum"] == lim.minimum
        assert s[key]["cgroup"] == lim.cgroup and s[key]["alias"] == lim.alias
        assert ("zero_means" in s[key]) == bool(lim.zero_means)
    assert s["pids"]["zero_means"] == "unlimited"
