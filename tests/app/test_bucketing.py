"""Bucketing: stable, monotone in the percentage, uniform, targeting before percentage."""

from __future__ import annotations

from shiftover.flags.bucketing import Rollout, Targeting, bucket, in_rollout, key_text
from shiftover.flags.routing import Routing

KEYS = range(100_000)


def test_bucket_is_stable_and_in_range() -> None:
    first = [bucket("m:reads_percent", k) for k in range(1000)]
    assert first == [bucket("m:reads_percent", k) for k in range(1000)]
    assert all(0 <= b < 100 for b in first)
    # known value pins the hash across processes and releases
    assert bucket("orders:reads_percent", (42,)) == bucket("orders:reads_percent", 42)
    assert round(bucket("orders:reads_percent", 42), 9) == 93.819402505


def test_raising_the_percentage_never_moves_a_key_back() -> None:
    previous: set[int] = set()
    for percent in (1, 5, 10, 25, 50, 75, 99, 100):
        current = {k for k in range(20_000) if in_rollout("flag", k, percent)}
        assert previous <= current, f"keys left the rollout when raising to {percent}%"
        previous = current
    assert len(previous) == 20_000


def test_uniform_within_tolerance_over_100k_keys() -> None:
    deciles = [0] * 10
    for k in KEYS:
        deciles[int(bucket("orders:reads_percent", k) // 10)] += 1
    for count in deciles:
        assert abs(count - 10_000) < 400, deciles  # ~4 standard deviations
    ten = sum(1 for k in KEYS if in_rollout("orders:reads_percent", k, 10))
    assert 9_600 < ten < 10_400


def test_flags_bucket_independently() -> None:
    a = {k for k in range(10_000) if in_rollout("a", k, 50)}
    b = {k for k in range(10_000) if in_rollout("b", k, 50)}
    overlap = len(a & b) / 10_000
    assert 0.22 < overlap < 0.28  # independent halves overlap by about a quarter


def test_edges_zero_and_hundred() -> None:
    assert not any(in_rollout("f", k, 0) for k in range(1000))
    assert all(in_rollout("f", k, 100) for k in range(1000))


def test_targeting_rules_come_before_the_percentage() -> None:
    rules = Targeting.from_value({"allow": [7, "alice"], "deny": [8], "attributes": {"group": "internal"}})
    rollout = Rollout(percent=0, targeting=rules)
    assert rollout.includes("f", 7)
    assert rollout.includes("f", ("alice",))
    assert not rollout.includes("f", 9)
    assert rollout.includes("f", 9, {"group": "internal"})
    assert not rollout.includes("f", 9, {"group": "customers"})
    assert not Rollout(percent=100, targeting=rules).includes("f", 8)  # deny beats 100%
    assert Targeting.from_value(rules.to_value()) == rules


def test_routing_reads_new_uses_targeting_and_kill() -> None:
    rules = Targeting.from_value({"allow": [1]})
    routing = Routing(reads_percent=0, migration="m", targeting=rules)
    assert routing.reads_new((1,)) and not routing.reads_new((2,))
    assert not routing.kill().reads_new((1,))
    assert key_text((1, "a")) == '[1,"a"]'
