"""The OpenFeature provider: Shiftover's flags read through the openfeature-sdk client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from shiftover.control.store import ControlStore
from shiftover.flags.bucketing import Targeting
from shiftover.flags.client import FlagClient
from shiftover.flags.openfeature import ShiftoverProvider
from shiftover.flags.routing import WriteMode, set_reads_percent, set_reads_targeting, set_write_mode
from shiftover.flags.store import set_flag


@pytest.fixture
def of_client(control_store: ControlStore) -> Iterator[tuple[api.OpenFeatureClient, FlagClient, ControlStore]]:
    eng = control_store.engine
    set_flag(eng, "feature:dark", False, "t")
    set_flag(eng, "feature:banner", "hello", "t")
    set_flag(eng, "feature:limit", 7, "t")
    set_flag(eng, "feature:ratio", 0.5, "t")
    set_flag(eng, "feature:cfg", {"a": 1}, "t")
    set_flag(eng, "feature:canary", {"percent": 0, "attributes": {"group": "internal"}}, "t")
    set_write_mode(eng, "orders", WriteMode.DUAL_OLD_PRIMARY, "t")
    set_reads_percent(eng, "orders", 0, "t")
    set_reads_targeting(eng, "orders", Targeting.from_value({"allow": [42]}), "t")
    flags = FlagClient(eng, start=False)
    api.set_provider(ShiftoverProvider(flags))
    yield api.get_client(), flags, control_store
    api.clear_providers()


def test_typed_values(of_client: tuple[api.OpenFeatureClient, FlagClient, ControlStore]) -> None:
    client, _, _ = of_client
    assert client.get_boolean_value("feature:dark", True) is False  # a dark launch: code deployed, flag off
    assert client.get_string_value("feature:banner", "") == "hello"
    assert client.get_integer_value("feature:limit", 0) == 7
    assert client.get_float_value("feature:ratio", 0.0) == 0.5
    assert client.get_object_value("feature:cfg", {}) == {"a": 1}
    assert client.get_string_value("orders:writes", "old_only") == "dual_old_primary"
    details = client.get_integer_details("feature:banner", 3)
    assert details.value == 3 and details.error_code == ErrorCode.TYPE_MISMATCH
    missing = client.get_boolean_details("feature:nope", True)
    assert missing.value is True and missing.error_code == ErrorCode.FLAG_NOT_FOUND


def test_rollouts_and_targeting(of_client: tuple[api.OpenFeatureClient, FlagClient, ControlStore]) -> None:
    client, _, _ = of_client
    internal = client.get_boolean_details("feature:canary", False, EvaluationContext("u1", {"group": "internal"}))
    assert internal.value is True and internal.reason == Reason.TARGETING_MATCH
    outside = client.get_boolean_details("feature:canary", True, EvaluationContext("u1", {"group": "customers"}))
    assert outside.value is False and outside.reason == Reason.SPLIT
    assert client.get_boolean_value("orders:reads_percent", False, EvaluationContext("42")) is True  # allow-listed
    assert client.get_boolean_value("orders:reads_percent", True, EvaluationContext("43")) is False
    no_key = client.get_boolean_details("feature:limit", False)
    assert no_key.error_code == ErrorCode.TARGETING_KEY_MISSING


def test_stale_reason_when_store_unreachable(of_client: tuple[api.OpenFeatureClient, FlagClient, ControlStore]) -> None:
    client, flags, store = of_client
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE so_flags RENAME TO so_flags_gone"))
    flags.refresh()
    details = client.get_string_details("feature:banner", "")
    assert details.value == "hello" and details.reason == Reason.STALE
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE so_flags_gone RENAME TO so_flags"))
