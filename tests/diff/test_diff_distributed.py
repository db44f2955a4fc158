"""The validation diff over worker processes (``validation.distributed``) on real servers, with
PostgreSQL and MariaDB control stores: the same differences as the in-process diff and as a plain
comparison of both tables' rows read through the raw drivers; a worker SIGKILLed holding a segment
loses it to another, and every segment is recorded once; a SQLite control store is refused naming
the spec field."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pymysql
import pytest
import sqlalchemy as sa

from shiftover.checks.context import DiffScope, GateContext
from shiftover.checks.data import checksum_gate
from shiftover.connect import get_engine
from shiftover.control import schema
from shiftover.control.segment_leases import claim_next
from shiftover.control.worker_processes import wait_for_workers, worker_name
from shiftover.diff import diff_tables, new_run_id, unfinished_run
from shiftover.diff.distributed import (
    aggregate_report,
    diff_distributed,
    diff_pool,
    plan_distributed_diff,
    read_segments,
    run_workers,
    start_diff_workers,
)
from shiftover.diff.report import DiffReport
from shiftover.errors import SpecError
from shiftover.migration import Migration, open_migration
from shiftover.spec import GateSpec, parse_spec

N, TTL = 200_000, 3.0
DDL = "CREATE TABLE items (id bigint PRIMARY KEY, n integer NOT NULL, v varchar(40))"
# Planted in the target: the first and last segments hold some of each kind, and the extras lie
# outside the source's key span too (the open-ended outer segments must catch them).
MISSING = [1, 2, 17, 99_999, 150_001, 199_999, 200_000]
EXTRA = [-5, 0, 200_001, 250_000]
CHANGED = [3, 4, 12_345, 100_000, 187_654, 199_998]


def _spec(source: str, target: str, **distributed: Any) -> dict[str, Any]:
    return {
        "name": "dd",
        "source": {"url": source, "table": "items"},
        "target": {"url": target, "table": "items"},
        "key": "id",
        "validation": {"repair": False, **({"distributed": distributed} if distributed else {})},
    }


def _fill_pg(url: str, n: int) -> None:
    with get_engine(url).begin() as conn:
        conn.execute(sa.text(DDL))
        conn.execute(sa.text(f"INSERT INTO items SELECT g, g * 7 % 1000, 'v' || g FROM generate_series(1, {n}) g"))


def _plant_pg(url: str) -> None:
    with get_engine(url).begin() as conn:
        conn.execute(sa.text("DELETE FROM items WHERE id = ANY(:k)"), {"k": MISSING})
        conn.execute(
            # (a table larger than N already holds some: the child-run test at SO_SCALE_ROWS plants fewer)
            sa.text(
                "INSERT INTO items SELECT k, 1, 'extra' FROM unnest(CAST(:k AS bigint[])) k ON CONFLICT DO NOTHING"
            ),
            {"k": EXTRA},
        )
        conn.execute(sa.text("UPDATE items SET v = 'changed' WHERE id = ANY(:k)"), {"k": CHANGED[:-1]})
        conn.execute(sa.text("UPDATE items SET n = -1 WHERE id = :k"), {"k": CHANGED[-1]})


def _expected() -> set[tuple[int, str]]:
    return {(k, "missing") for k in MISSING} | {(k, "extra") for k in EXTRA} | {(k, "changed") for k in CHANGED}


def _rows_pg(url: str) -> dict[int, tuple[Any, ...]]:
    conninfo = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute("SELECT id, n, v FROM items")}


def _plain_diff(src: dict[int, tuple[Any, ...]], tgt: dict[int, tuple[Any, ...]]) -> set[tuple[int, str]]:
    """The differences by a plain comparison of every row (independent of the diff engine)."""
    out = {(k, "missing") for k in src.keys() - tgt.keys()} | {(k, "extra") for k in tgt.keys() - src.keys()}
    return out | {(k, "changed") for k in src.keys() & tgt.keys() if src[k] != tgt[k]}


def _found(report: DiffReport) -> set[tuple[int, str]]:
    return {(int(d.key[0]), d.kind) for d in report.differences}


def _same_reports(a: DiffReport, b: DiffReport) -> None:
    assert [(d.key, d.kind, d.columns) for d in a.differences] == [(d.key, d.kind, d.columns) for d in b.differences]
    assert (a.source_rows, a.target_rows, a.truncated, a.counts()) == (
        b.source_rows,
        b.target_rows,
        b.truncated,
        b.counts(),
    )


def _open(source: str, target: str, store: str, **distributed: Any) -> Migration:
    return open_migration(parse_spec(_spec(source, target, **distributed)), store)


def _segments_done_once(m: Migration, run_id: str) -> None:
    rows = read_segments(m.store.engine, m.name, run_id)
    assert rows and all(r.state in ("equal", "differ") and r.done_by and r.holder is None for r in rows), rows
    f = schema.validation_failures
    with m.store.engine.connect() as conn:
        keys = [
            r[0] for r in conn.execute(sa.select(f.c.key_json).where(f.c.migration == m.name, f.c.run_id == run_id))
        ]
    assert len(keys) == len(set(keys)) == sum(r.differences for r in rows)


def test_distributed_diff_equals_in_process_and_plain_sql(pg_database: Callable[[], str]) -> None:
    source, target, store = pg_database(), pg_database(), pg_database()
    _fill_pg(source, N)
    _fill_pg(target, N)
    _plant_pg(target)
    m = _open(source, target, store, workers=3, lease_ttl_seconds=10)
    assert m.spec.validation.distributed is not None
    local = diff_tables(m.source, m.target, m.mapping, m.spec.validation)
    run_id = new_run_id()
    spread = diff_distributed(m, m.spec.validation.distributed, run_id)

    plain = _plain_diff(_rows_pg(source), _rows_pg(target))
    assert plain == _expected()
    assert _found(local) == _found(spread) == plain
    _same_reports(local, spread)
    assert spread.source_rows == N and spread.target_rows == N - len(MISSING) + len(EXTRA)
    assert spread.run_id == run_id and spread.segments >= 6 and spread.segments_differing > 0
    rows = read_segments(m.store.engine, m.name, run_id)
    assert rows[0].differences > 0 and rows[-1].differences > 0  # the first and last segments differ
    assert len({r.done_by for r in rows}) >= 2  # the work was spread
    _segments_done_once(m, run_id)


def test_a_worker_killed_holding_a_segment_loses_it_and_the_result_is_the_same(pg_database: Callable[[], str]) -> None:
    source, target, store = pg_database(), pg_database(), pg_database()
    _fill_pg(source, N)
    _fill_pg(target, N)
    _plant_pg(target)
    m = _open(source, target, store, workers=3, lease_ttl_seconds=TTL)
    settings = m.spec.validation.distributed
    assert settings is not None
    local = diff_tables(m.source, m.target, m.mapping, m.spec.validation)
    run_id = new_run_id()
    planned = plan_distributed_diff(m, settings, run_id)

    with target_locked(target):
        procs = start_diff_workers(m, 3, planned.job, ttl=TTL, prefix="k")
        victim_id = worker_name("k", 0)
        segment = _wait_holding(m, run_id, victim_id, procs[0])
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait()
    exits = wait_for_workers(procs[1:])
    assert procs[0].returncode == -signal.SIGKILL
    assert all(e.returncode == 0 for e in exits), [e.stderr[-2000:] for e in exits]
    assert any(segment in (e.report or {}).get("taken_over", []) for e in exits), [e.report for e in exits]

    killed = next(r for r in read_segments(m.store.engine, m.name, run_id) if r.segment == segment)
    assert killed.done_by not in (None, victim_id)
    _segments_done_once(m, run_id)
    spread = aggregate_report(planned.plan, m.store.engine, m.name, run_id, planned.narrowing)
    assert _found(spread) == _expected() == _found(local)
    _same_reports(local, spread)
    # the run resumed by a new parent: nothing left to do, the same report
    again = diff_distributed(m, settings, run_id)
    assert again.segments_resumed == again.segments and _found(again) == _expected()


def test_a_new_parent_resumes_a_run_whose_worker_vanished_holding_a_segment(pg_database: Callable[[], str]) -> None:
    """A run planned by a parent that died, one segment still leased by a worker that is gone: the
    next parent (the gate finds the run by ``unfinished_run``) diffs what is left, and a survivor
    takes the orphaned segment once its lease expires."""
    source, target, store = pg_database(), pg_database(), pg_database()
    _fill_pg(source, 40_000)
    _fill_pg(target, 40_000)
    _plant_pg(target)
    m = _open(source, target, store, workers=2, lease_ttl_seconds=TTL)
    settings = m.spec.validation.distributed
    assert settings is not None
    run_id = new_run_id()
    plan_distributed_diff(m, settings, run_id)
    orphan, _ = claim_next(m.store.engine, diff_pool(m.name, run_id), "gone-worker", ttl=TTL)
    assert orphan is not None and orphan.segment == 0  # the first segment holds planted differences
    assert unfinished_run(m.store.engine, m.name) == run_id

    report = diff_distributed(m, settings, run_id)
    assert _found(report) == _plain_diff(_rows_pg(source), _rows_pg(target))
    first = read_segments(m.store.engine, m.name, run_id)[0]
    assert first.done_by not in (None, "gone-worker") and first.differences > 0
    _segments_done_once(m, run_id)
    assert unfinished_run(m.store.engine, m.name) is None


def _planned_pg_diff(pg_database: Callable[[], str]) -> tuple[str, str, Any, Any, str, Any]:
    """Two PostgreSQL tables of 40k rows with planted differences, a 2-worker distributed diff of
    them planned: (source URL, target URL, migration, its distributed settings, run id, the plan)."""
    source, target, store = pg_database(), pg_database(), pg_database()
    _fill_pg(source, 40_000)
    _fill_pg(target, 40_000)
    _plant_pg(target)
    m = _open(source, target, store, workers=2, lease_ttl_seconds=TTL)
    settings = m.spec.validation.distributed
    assert settings is not None
    run_id = new_run_id()
    return source, target, m, settings, run_id, plan_distributed_diff(m, settings, run_id)


def test_when_every_worker_dies_the_parent_starts_a_new_round(pg_database: Callable[[], str]) -> None:
    """Both workers of the parent's first round are SIGKILLed holding segments: the parent sees
    segments pending and nobody left, starts a second round, and the run ends with the same result."""
    source, target, m, settings, run_id, planned = _planned_pg_diff(pg_database)
    # the parent's rounds (``diff_distributed`` after its plan, which reads the target) in a thread
    outcome: dict[str, Any] = {}
    parent = threading.Thread(target=lambda: outcome.update(exits=run_workers(m, settings, planned.job, prefix="r")))
    with target_locked(target):
        parent.start()
        first_round = [worker_name("r0", i) for i in range(2)]
        deadline = time.monotonic() + 60
        while not set(first_round) <= {r.holder for r in read_segments(m.store.engine, m.name, run_id)}:
            assert time.monotonic() < deadline, "the first round never held two segments"
            time.sleep(0.05)
        pids = _worker_pids(first_round)
        assert len(pids) == 2
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    parent.join(timeout=120)
    assert not parent.is_alive()
    rows = read_segments(m.store.engine, m.name, run_id)
    assert {r.done_by for r in rows}.isdisjoint(first_round)  # the second round did every segment
    assert all(str(r.done_by).startswith("r1-") for r in rows)
    assert sorted(e.returncode for e in outcome["exits"]) == [-signal.SIGKILL, -signal.SIGKILL, 0, 0]
    _segments_done_once(m, run_id)
    report = aggregate_report(planned.plan, m.store.engine, m.name, run_id, planned.narrowing)
    assert _found(report) == _plain_diff(_rows_pg(source), _rows_pg(target))


def test_a_stalled_worker_is_ended_and_the_result_is_the_same(pg_database: Callable[[], str]) -> None:
    """A worker SIGSTOPped holding a segment (as one hung in a query its cancel never reaches): the
    other worker takes the segment over once its lease expires, the parent ends the stopped one
    instead of waiting for it forever, and the run ends with the plain comparison's differences,
    each segment recorded once."""
    source, target, m, settings, run_id, planned = _planned_pg_diff(pg_database)
    outcome: dict[str, Any] = {}
    parent = threading.Thread(
        target=lambda: outcome.update(exits=run_workers(m, settings, planned.job, prefix="s")), daemon=True
    )
    victim = worker_name("s0", 0)
    with target_locked(target):
        parent.start()
        deadline = time.monotonic() + 60
        while victim not in {r.holder for r in read_segments(m.store.engine, m.name, run_id) if r.state == "pending"}:
            assert time.monotonic() < deadline, "the worker never held a segment"
            time.sleep(0.05)
        (pid,) = _worker_pids([victim])
        os.kill(pid, signal.SIGSTOP)
    parent.join(timeout=120)
    if parent.is_alive():
        os.kill(pid, signal.SIGKILL)  # so the waiting parent can end
    assert not parent.is_alive(), "the parent still waits for the stopped worker"
    ended = [e for e in outcome["exits"] if e.stalled is not None]
    # the other worker may finish every segment before the parent sees the lapse: then the stopped
    # one is ended for outliving the work
    assert len(ended) == 1, outcome["exits"]
    assert "lapsed" in str(ended[0].stalled) or "after every segment was finished" in str(ended[0].stalled)
    assert ended[0].returncode in (-signal.SIGTERM, -signal.SIGKILL)
    assert not os.path.exists(f"/proc/{pid}")
    rows = read_segments(m.store.engine, m.name, run_id)
    assert victim not in {r.done_by for r in rows}
    _segments_done_once(m, run_id)
    report = aggregate_report(planned.plan, m.store.engine, m.name, run_id, planned.narrowing)
    assert _found(report) == _plain_diff(_rows_pg(source), _rows_pg(target))


@contextmanager
def target_locked(url: str) -> Iterator[None]:
    """Hold the target's rows: every worker claims a segment and waits on its first read of the
    target, so one killed meanwhile dies mid-segment, its lease taken and nothing recorded."""
    blocker = psycopg.connect(sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))
    blocker.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        blocker.rollback()
        blocker.close()


def _worker_pids(names: list[str]) -> list[int]:
    """The pids of this test's worker processes, found by the worker ids on their command lines."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(name.encode() in argv for name in names):
            pids.append(int(entry))
    return pids


def _wait_holding(m: Migration, run_id: str, worker: str, proc: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"worker ended early: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        for r in read_segments(m.store.engine, m.name, run_id):
            if r.holder == worker and r.state == "pending":
                return r.segment
        time.sleep(0.05)
    raise AssertionError("the worker never claimed a segment")


def test_zero_differences_end_in_zero_through_the_gate(pg_database: Callable[[], str]) -> None:
    source, target, store = pg_database(), pg_database(), pg_database()
    _fill_pg(source, 50_000)
    _fill_pg(target, 50_000)
    m = _open(source, target, store, workers=2, lease_ttl_seconds=10)
    result = checksum_gate(GateContext(m, "validate", DiffScope(), "test"), GateSpec(name="checksum"))
    assert result.passed and result.metrics["differences"] == 0 and result.metrics["source_rows"] == 50_000
    _segments_done_once(m, result.metrics["run_id"])


def test_the_gate_repairs_what_the_workers_found(pg_database: Callable[[], str]) -> None:
    source, target, store = pg_database(), pg_database(), pg_database()
    _fill_pg(source, 30_000)
    _fill_pg(target, 30_000)
    _plant_pg(target)
    spec = _spec(source, target, workers=2, lease_ttl_seconds=10)
    spec["validation"]["repair"] = True
    m = open_migration(parse_spec(spec), store)
    before = _plain_diff(_rows_pg(source), _rows_pg(target))
    assert len(before) == 10  # 3 missing, 3 changed, 4 extra (two past the source's last key)
    result = checksum_gate(GateContext(m, "validate", DiffScope(), "test"), GateSpec(name="checksum"))
    assert {(int(r["key"]), r["kind"]) for r in result.rows} == before
    assert result.metrics["differences"] == len(before) and result.metrics["remaining"] == 0
    assert result.passed and _rows_pg(source) == _rows_pg(target)


def test_pg_to_mariadb_distributed_equals_in_process(
    pg_database: Callable[[], str], mariadb_database: Callable[[], str]
) -> None:
    source, target, store = pg_database(), mariadb_database(), mariadb_database()  # a MariaDB control store too
    n = 20_000
    _fill_pg(source, n)
    rows = [(g, g * 7 % 1000, f"v{g}") for g in range(1, n + 1) if g not in MISSING]
    rows = [(k, -1 if k == 12_345 else a, "changed" if k in (3, 4) else v) for k, a, v in rows]
    rows += [(k, 1, "extra") for k in (-5, 0, 20_001)]
    url = sa.make_url(target)
    with pymysql.connect(
        host=url.host, port=url.port or 3306, user=url.username, password=url.password or "", database=url.database
    ) as conn:
        with conn.cursor() as cur:
            cur.execute(DDL)
            cur.executemany("INSERT INTO items VALUES (%s, %s, %s)", rows)
        conn.commit()
    expected = {(k, "missing") for k in MISSING if k <= n} | {(k, "extra") for k in (-5, 0, 20_001)}
    expected |= {(k, "changed") for k in (3, 4, 12_345)}
    m = _open(source, target, store, workers=2, lease_ttl_seconds=10)
    assert m.spec.validation.distributed is not None
    local = diff_tables(m.source, m.target, m.mapping, m.spec.validation)
    run_id = new_run_id()
    spread = diff_distributed(m, m.spec.validation.distributed, run_id)
    assert _found(local) == _found(spread) == expected
    _same_reports(local, spread)
    _segments_done_once(m, run_id)


def test_a_sqlite_control_store_is_refused_naming_the_field(pg_database: Callable[[], str], tmp_path: Any) -> None:
    source, target = pg_database(), pg_database()
    _fill_pg(source, 100)
    _fill_pg(target, 100)
    m = _open(source, target, f"sqlite:///{tmp_path}/control.db", workers=2)
    assert m.spec.validation.distributed is not None
    with pytest.raises(SpecError, match=r"validation\.distributed.*PostgreSQL or MariaDB"):
        diff_distributed(m, m.spec.validation.distributed, new_run_id())
    with m.store.engine.connect() as conn:  # refused before anything was written
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.diff_segments)).scalar_one() == 0


def test_mode_deployment_outside_the_validate_flow_is_refused_naming_the_field(pg_database: Callable[[], str]) -> None:
    source, target, store = pg_database(), pg_database(), pg_database()
    _fill_pg(source, 100)
    _fill_pg(target, 100)
    m = _open(source, target, store, workers=2, mode="deployment")
    assert m.spec.validation.distributed is not None
    with pytest.raises(SpecError, match=r"validation\.distributed\.mode.*validate flow"):
        diff_distributed(m, m.spec.validation.distributed, new_run_id())
    with m.store.engine.connect() as conn:  # refused before anything was written
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.diff_segments)).scalar_one() == 0


@pytest.mark.parametrize(
    ("distributed", "field"),
    [
        ({"workers": 0}, "workers"),
        ({"workers": 2, "mode": "threads"}, "mode"),
        ({"workers": 2, "mode": "deployment", "deployment": "diff-worker"}, "deployment"),
        ({"workers": 2, "lease_ttl_seconds": 1}, "lease_ttl_seconds"),
    ],
)
def test_bad_settings_name_their_field(distributed: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError, match=rf"validation\.distributed\.{field}"):
        parse_spec(_spec("postgresql://h/a", "postgresql://h/b", **distributed))


def test_the_diff_worker_flow_diffs_a_planned_run_of_a_started_migration(
    prefect_harness: None, pg_database: Callable[[], str], tmp_path: Any
) -> None:
    """The ``diff-worker`` flow, called as a child run calls it, for a migration its parent registered:
    it opens the migration without registering it and diffs every segment of the planned run."""
    import yaml

    from shiftover.flows.diff_worker import diff_worker

    source, target, store = pg_database(), pg_database(), pg_database()
    _fill_pg(source, N)
    _fill_pg(target, N)
    _plant_pg(target)
    spec = _spec(source, target, workers=2, lease_ttl_seconds=10)
    m = open_migration(parse_spec(spec), store)  # the parent's run registered it
    settings = m.spec.validation.distributed
    assert settings is not None
    run_id = new_run_id()
    planned = plan_distributed_diff(m, settings, run_id)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    report = diff_worker(str(spec_path), planned.job.as_dict(), store, worker_id="w1", lease_ttl_seconds=10)
    assert len(report["segments"]) == len(read_segments(m.store.engine, m.name, run_id)) > 0, report
    _segments_done_once(m, run_id)
    spread = aggregate_report(planned.plan, m.store.engine, m.name, run_id, planned.narrowing)
    assert _found(spread) == _plain_diff(_rows_pg(source), _rows_pg(target)) == _expected()
