"""Sizes as users write them (domain/sizes.py)."""
from __future__ import annotations

import pytest

from openvps.domain.errors import InvalidArgument
from openvps.domain.sizes import format_size, parse_size

K, M, G, T = 1 << 10, 1 << 20, 1 << 30, 1 << 40


@pytest.mark.parametrize("text,expected", [
    ("512M", 512 * M),
    ("1.5G", G + G // 2),
    ("1024K", M),
    ("2T", 2 * T),
    ("1024", 1024),
    ("0", 0),
    ("1B", 1),
    ("512MB", 512 * M),
    ("512MiB", 512 * M),
    ("512m", 512 * M),
    (" 512 M ", 512 * M),
    ("0.5K", 512),
])
def test_parse_text(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("value,expected", [(1024, 1024), (0, 0), (1.9, 1), (536870912, 512 * M)])
def test_parse_numbers_are_bytes(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize("bad", ["", "abc", "12X", "M", "1.5.5G", "-1M", "1,5G", "1e3", "5 GB GB", None, "0x10"])
def test_parse_bad_text(bad):
    with pytest.raises(InvalidArgument) as e:
        parse_size(bad, "ram")
    assert e.value.message.startswith("ram: ")
    assert "512M" in e.value.message          # says how to write it
    assert e.value.status == 400


@pytest.mark.parametrize("bad", [-1, -0.5, True, False])
def test_parse_bad_numbers(bad):
    with pytest.raises(InvalidArgument):
        parse_size(bad)


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_parse_non_finite_float_is_invalid_argument(bad):
    with pytest.raises(InvalidArgument):
        parse_size(bad)


@pytest.mark.parametrize("n,text", [
    (None, "-"), (0, "0"), (1023, "1023"), (K, "1K"), (M, "1M"), (512 * M, "512M"),
    (G + G // 2, "1.5G"), (150 * G, "150G"), (T, "1T"), (3 * T, "3T"), (1536, "1.5K"),
])
def test_format(n, text):
    assert format_size(n) == text


@pytest.mark.parametrize("n", [K, 4 * K, 512 * M, G + G // 2, 8 * G, 2 * T, 100 * M])
def test_format_round_trips(n):
    assert parse_size(format_size(n)) == n
