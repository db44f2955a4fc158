"""Mode ``dask`` of ``validation.distributed`` on a real ``dask.distributed`` cluster: a ``dask
scheduler`` and two ``dask worker`` processes started here as separate OS processes, each running
the diff's worker loop. A 200k-row PG -> PG diff with missing, extra and changed rows planted gives
the in-process report and what a plain comparison of both tables' rows finds; one Dask worker
process is SIGKILLed holding a segment and the run ends with the same report; a SQLite control
store, a bad scheduler address and a silent scheduler are refused naming the field before
anything is written."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from dask_cluster import DaskCluster, Parent, dask_cluster
from prefect_stack import free_port

from shiftover.control import schema
from shiftover.diff import diff_tables, new_run_id
from shiftover.diff.dask_workers import DaskDiffLoops
from shiftover.diff.distributed import (
    DiffRun,
    DiffRunProgress,
    aggregate_report,
    diff_distributed,
    plan_distributed_diff,
    read_segments,
)
from shiftover.errors import SpecError
from shiftover.migration import Migration, open_migration
from shiftover.spec import parse_spec

from .test_diff_distributed import (
    EXTRA,
    MISSING,
    TTL,
    N,
    _fill_pg,
    _found,
    _plain_diff,
    _plant_pg,
    _rows_pg,
    _same_reports,
    _segments_done_once,
    _spec,
    target_locked,
)

# SO_SCALE_ROWS=2000000 runs the 2M-row case by hand (extras planted inside the key span
# then already exist, and are not extras)
ROWS = int(os.environ.get("SO_SCALE_ROWS", N))
EXTRAS = [k for k in EXTRA if not 1 <= k <= ROWS]


@pytest.fixture
def cluster(dask_home: Path) -> Iterator[DaskCluster]:
    with dask_cluster(dask_home) as running:
        yield running


def _open(source: str, target: str, store: str, scheduler: str, **distributed: Any) -> Migration:
    spec = _spec(source, target, workers=2, mode="dask", scheduler=scheduler, **distributed)
    return open_migration(parse_spec(spec), store)


def _tables(pg_database: Callable[[], str], rows: int, plant: bool = True) -> tuple[str, str, str]:
    source, target, store = pg_database(), pg_database(), pg_database()
    _fill_pg(source, rows)
    _fill_pg(target, rows)
    if plant:
        _plant_pg(target)
    return source, target, store


def plain_segments(store: str, migration: str) -> tuple[int, int, int]:
    """(segments, segments recorded as differing, differences) of the migration's one diff run, read
    with psycopg; segments still pending are not counted."""
    conninfo = sa.make_url(store).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as conn:
        runs = conn.execute(
            "SELECT DISTINCT run_id FROM so_diff_segments WHERE migration = %s", (migration,)
        ).fetchall()
        assert len(runs) == 1, runs
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE state = 'differ'), coalesce(sum(differences), 0) "
            "FROM so_diff_segments WHERE migration = %s AND state IN ('equal', 'differ')",
            (migration,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def test_dask_diff_equals_in_process_and_plain_sql(pg_database: Callable[[], str], cluster: DaskCluster) -> None:
    source, target, store = _tables(pg_database, ROWS)
    m = _open(source, target, store, cluster.address, lease_ttl_seconds=10)
    settings = m.spec.validation.distributed
    assert settings is not None and settings.mode == "dask"
    local = diff_tables(m.source, m.target, m.mapping, m.spec.validation)
    run_id = new_run_id()
    ticks: list[DiffRunProgress] = []
    spread = diff_distributed(m, settings, run_id, tick=ticks.append)

    plain = _plain_diff(_rows_pg(source), _rows_pg(target))
    assert _found(local) == _found(spread) == plain and len(plain) == len(MISSING) + len(EXTRAS) + 6
    _same_reports(local, spread)
    assert spread.source_rows == ROWS and spread.target_rows == ROWS - len(MISSING) + len(EXTRAS)
    _segments_done_once(m, run_id)
    rows = read_segments(m.store.engine, m.name, run_id)
    assert {"-dw0-" in str(r.done_by) for r in rows} == {True, False}, [r.done_by for r in rows]  # both loops
    # the last tick: the run's final numbers, against the segments read with psycopg
    segments, differing, differences = plain_segments(store, m.name)
    last = ticks[-1]
    assert (last.segments, last.done, last.pending) == (segments, segments, 0)
    assert (last.differing, last.differences) == (differing, differences) and differences == len(plain)
    assert (last.source_rows, last.target_rows) == (ROWS, ROWS - len(MISSING) + len(EXTRAS))
    assert sum(done for done, _ in last.holders.values()) == segments
    assert len(ticks) >= 2 and ticks[0].done < segments  # it ticked while the loops ran


def test_a_sigkilled_dask_worker_loses_its_segment_and_the_report_is_the_same(
    pg_database: Callable[[], str], cluster: DaskCluster
) -> None:
    source, target, store = _tables(pg_database, ROWS)
    m = _open(source, target, store, cluster.address, lease_ttl_seconds=TTL)
    settings = m.spec.validation.distributed
    assert settings is not None
    local = diff_tables(m.source, m.target, m.mapping, m.spec.validation)
    planned = plan_distributed_diff(m, settings, new_run_id())
    run_id = planned.job.run_id

    with target_locked(target):  # each loop waits mid-segment: the victim dies holding one
        parent = Parent(lambda: DaskDiffLoops(every=0.5)(DiffRun(m, settings, planned.job)))
        segment = _wait_holding(m, run_id, cluster, "dw0")
        victim = cluster.kill_worker("dw0")
    parent.join()
    result = parent.result(cluster)
    assert victim.returncode == -signal.SIGKILL
    # every report came back from the survivor: its own loop, and the dead worker's task Dask re-ran there
    assert result.errors == [] and result.reports, (result.errors, result.reports)
    assert all("-dw1-" in r["worker"] for r in result.reports), result.reports
    assert segment in [s for r in result.reports for s in r["taken_over"]], result.reports
    killed = next(r for r in read_segments(m.store.engine, m.name, run_id) if r.segment == segment)
    assert "-dw1-" in str(killed.done_by)
    _segments_done_once(m, run_id)
    spread = aggregate_report(planned.plan, m.store.engine, m.name, run_id, planned.narrowing)
    assert _found(spread) == _plain_diff(_rows_pg(source), _rows_pg(target)) == _found(local)
    _same_reports(local, spread)
    # the run resumed by a new parent (one Dask worker left): nothing to do, the same report
    again = diff_distributed(m, settings, run_id)
    assert again.segments_resumed == again.segments and _found(again) == _found(local)


def _wait_holding(m: Migration, run_id: str, cluster: DaskCluster, worker: str) -> int:
    """The segment the loop on Dask worker ``worker`` holds (pending: blocked on the target)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for r in read_segments(m.store.engine, m.name, run_id):
            if r.state == "pending" and r.holder is not None and f"-{worker}-" in r.holder:
                return r.segment
        time.sleep(0.05)
    raise AssertionError(f"the loop on {worker} never claimed a segment\n{cluster.logs()}")


def _nothing_written(m: Migration) -> None:
    with m.store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.diff_segments)).scalar_one() == 0


def test_a_sqlite_control_store_is_refused_naming_the_field(
    pg_database: Callable[[], str],
    tmp_path: Path,
    dask_home: Path,
) -> None:
    source, target, _ = _tables(pg_database, 100, plant=False)
    m = _open(source, target, f"sqlite:///{tmp_path}/control.db", f"tcp://127.0.0.1:{free_port()}")
    assert m.spec.validation.distributed is not None
    with pytest.raises(SpecError, match=r"validation\.distributed.*PostgreSQL or MariaDB") as caught:
        diff_distributed(m, m.spec.validation.distributed, new_run_id())
    assert caught.value.field == "validation.distributed"
    _nothing_written(m)


def test_a_malformed_scheduler_is_refused_when_the_spec_is_read() -> None:
    with pytest.raises(SpecError, match="is not a Dask scheduler address") as caught:
        parse_spec(_spec("postgresql://h/a", "postgresql://h/b", workers=2, mode="dask", scheduler="127.0.0.1:8786"))
    assert caught.value.field == "validation.distributed.scheduler"
    with pytest.raises(SpecError, match="mode dask needs the Dask scheduler's address") as caught:
        parse_spec(_spec("postgresql://h/a", "postgresql://h/b", workers=2, mode="dask"))
    assert caught.value.field == "validation.distributed.scheduler"


@pytest.mark.parametrize("kind", ["reference", "silent"])
def test_a_bad_scheduler_is_refused_before_anything_is_written(
    kind: str,
    pg_database: Callable[[], str],
    dask_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reference that resolves to no address, and an address nobody answers at."""
    source, target, store = _tables(pg_database, 100, plant=False)
    monkeypatch.setenv("SO_TEST_BAD_SCHEDULER", "127.0.0.1:8786")
    scheduler = "${SO_TEST_BAD_SCHEDULER}" if kind == "reference" else f"tcp://127.0.0.1:{free_port()}"
    m = _open(source, target, store, scheduler)
    message = "is not a Dask scheduler address" if kind == "reference" else "no Dask scheduler answered"
    with pytest.raises(SpecError, match=message) as caught:
        diff_distributed(m, m.spec.validation.distributed, new_run_id())  # type: ignore[arg-type]
    assert caught.value.field == "validation.distributed.scheduler"
    _nothing_written(m)
