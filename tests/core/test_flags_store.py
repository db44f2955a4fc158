"""Flags are versioned, audited, and compare-and-set fenced."""

from __future__ import annotations

import pytest

from shiftover.control.store import ControlStore
from shiftover.errors import FlagError
from shiftover.flags.routing import WriteMode, read_routing, set_reads_percent, set_write_mode
from shiftover.flags.store import get_flag, set_flag


def test_versions_and_audit(control_store: ControlStore) -> None:
    engine = control_store.engine
    assert set_flag(engine, "m:x", True, "alice", migration="m") == 1
    assert set_flag(engine, "m:x", False, "bob", migration="m") == 2
    flag = get_flag(engine, "m:x")
    assert flag is not None and flag.value is False and flag.version == 2 and flag.updated_by == "bob"
    audit = control_store.audit_entries("m", action="flag")
    assert [(a["actor"], a["detail"]["value"], a["detail"]["previous"]) for a in audit] == [
        ("alice", True, None),
        ("bob", False, True),
    ]


def test_compare_and_set_refuses_a_stale_writer(control_store: ControlStore) -> None:
    engine = control_store.engine
    set_flag(engine, "m:writes", "dual_old_primary", "a", expected_version=0)
    with pytest.raises(FlagError, match="version 1, not 0"):
        set_flag(engine, "m:writes", "dual_new_primary", "b", expected_version=0)
    assert get_flag(engine, "m:writes").value == "dual_old_primary"  # type: ignore[union-attr]


def test_routing_defaults_to_old_store_only(control_store: ControlStore) -> None:
    default = read_routing(control_store.engine, "m")
    assert (default.writes, default.reads_percent, default.shadow) == (WriteMode.OLD_ONLY, 0.0, False)
    set_write_mode(control_store.engine, "m", WriteMode.DUAL_OLD_PRIMARY, "a")
    set_reads_percent(control_store.engine, "m", 10, "a")
    routing = read_routing(control_store.engine, "m")
    assert (routing.writes, routing.reads_percent, routing.version) == (WriteMode.DUAL_OLD_PRIMARY, 10.0, 1)
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        set_reads_percent(control_store.engine, "m", 150, "a")
