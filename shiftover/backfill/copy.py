"""The chunk loop of one segment: read a keyset chunk, write it insert-if-absent, checkpoint.

Two loops share the same contract. A copy into PostgreSQL from PostgreSQL or MySQL without a
Python transform streams COPY data (rows are never decoded; see ``sources``). Every other pair
reads chunks through SQLAlchemy in a reader thread (the next chunk is read while the last is
written), passes them through the optional pandas transform and the cross-engine value
conversion, and hands them to the target dialect's writer. A checkpoint is committed after
each chunk's target commit, so a crash re-reads at most one chunk per segment.

A distributed worker passes a ``WorkProgress``: each checkpoint is progress, a throttle hold is a
wait on purpose, and the loop's database connections are cancelled if its heartbeat declares the
segment stalled (the copy then stops with ``SegmentLeaseLostError``, leaving the segment to the
worker that takes it over from the last checkpoint).
"""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from shiftover.backfill import checkpoints
from shiftover.backfill.errors import copy_error
from shiftover.backfill.keyset import Key, KeyRange, range_clause
from shiftover.backfill.mysql import MySQLWriter
from shiftover.backfill.postgres import PostgresWriter
from shiftover.backfill.sources import MySQLStream, PostgresStream, stream_for
from shiftover.backfill.sqlite import SQLiteWriter
from shiftover.backfill.throttle import Throttle
from shiftover.backfill.typemap import row_converter
from shiftover.control.work_progress import WorkProgress
from shiftover.engines import dialect_for
from shiftover.errors import CopyError, SegmentLeaseLostError, TransientCopyError
from shiftover.mapping import TableMapping

Row = tuple[Any, ...]


@dataclass(frozen=True)
class SegmentReport:
    segment: int
    rows_read: int
    rows_inserted: int
    chunks: int
    seconds: float
    complete: bool  # False: stopped by the time budget, resumable


@dataclass(frozen=True)
class Chunk:
    rows: list[Row]
    range: KeyRange  # (previous checkpoint, last key of the chunk]
    final: bool


def copy_segment(
    source: Engine,
    target: Engine,
    store_engine: Engine,
    mapping: TableMapping,
    migration: str,
    segment: int,
    throttle: Throttle,
    *,
    deadline: float | None = None,
    attempts: int = 5,
    holder: str | None = None,
    progress: WorkProgress | None = None,
) -> SegmentReport:
    """Copy what remains of one planned segment; lost connections are retried from the checkpoint.

    ``deadline`` is a ``time.time()`` after which no new chunk starts (committed chunks stay).
    Data errors raise ``CopyError`` at once and mark the segment failed; the next run retries it.
    ``holder``: a distributed worker's id; every checkpoint is fenced by its segment lease
    (``SegmentLeaseLostError`` once another worker has taken the segment over). ``progress``: its
    heartbeat's (see the module docstring); a stalled copy stops with ``SegmentLeaseLostError``.
    """
    retrying = Retrying(
        retry=retry_if_exception_type(TransientCopyError),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.5, max=10),
        reraise=True,
    )
    tally = _Tally()  # shared by the attempts: rows copied before a lost connection still count
    started = time.monotonic()
    progress = progress or WorkProgress()  # nobody watches it: never stalled
    once = functools.partial(_copy_segment_once, source, target, store_engine, mapping, migration, segment)
    try:
        for attempt in retrying:
            with attempt, _ended_by_stall(progress, migration, segment, holder):
                complete = once(throttle, deadline, tally, holder, progress)
                return SegmentReport(
                    segment, tally.read, tally.inserted, tally.chunks, time.monotonic() - started, complete
                )
    except CopyError:
        checkpoints.mark_segment(store_engine, migration, segment, checkpoints.FAILED)
        raise
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def _ended_by_stall(progress: WorkProgress, migration: str, segment: int, holder: str | None) -> Iterator[None]:
    """A stalled copy's statement was cancelled: its error is neither retried nor marks the segment failed."""
    try:
        yield
    except CopyError as exc:
        if progress.stalled:
            raise _stalled(migration, segment, holder) from exc
        raise


def _stalled(migration: str, segment: int, holder: str | None) -> SegmentLeaseLostError:
    return SegmentLeaseLostError(
        migration, f"worker {holder} made no progress on segment {segment} within the stall limit and gave it up"
    )


def _copy_segment_once(
    source: Engine,
    target: Engine,
    store_engine: Engine,
    mapping: TableMapping,
    migration: str,
    segment: int,
    throttle: Throttle,
    deadline: float | None,
    tally: _Tally,
    holder: str | None = None,
    progress: WorkProgress | None = None,
) -> bool:
    """One attempt from the segment's last checkpoint; True when the segment is done."""
    progress = progress or WorkProgress()
    state = next(s for s in checkpoints.load_plan(store_engine, migration) if s.segment.index == segment)
    if state.done:
        return True

    def checkpoint(key: Key | None, rows: int, final: bool) -> None:
        if final:  # everything up to the segment's end is copied (None: its open end, "end")
            key = state.segment.range.hi
        if progress.stalled:  # given up while this chunk was stuck: its new holder records it
            raise _stalled(migration, segment, holder)
        checkpoints.record_chunk(
            store_engine, migration, segment, key, rows, done=final, to_end=final and key is None, holder=holder
        )
        progress.advance()

    stream_class = stream_for(source, target, mapping)
    if stream_class is not None:
        return _stream_loop(
            stream_class, source, target, mapping, state.remaining, throttle, deadline, tally, checkpoint, progress
        )
    return _rows_loop(source, target, mapping, state.remaining, throttle, deadline, tally, checkpoint, progress)


@dataclass
class _Tally:
    read: int = 0
    inserted: int = 0
    chunks: int = 0


Checkpoint = Callable[[Key | None, int, bool], None]


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.time() >= deadline


def _may_start_chunk(throttle: Throttle, deadline: float | None) -> bool:
    return throttle.wait_until_allowed(lambda: _expired(deadline)) and not _expired(deadline)


@dataclass(frozen=True)
class _Step:
    """One chunk ready to write: the rows it reserves under the cap, and its checkpoint."""

    rows: int
    end: Key | None  # the checkpoint once written; None: the segment's last chunk
    write: Callable[[], tuple[int, int]]  # (rows read, rows inserted), committed in the target


def _run_steps(
    steps: Iterator[_Step],
    throttle: Throttle,
    deadline: float | None,
    tally: _Tally,
    checkpoint: Checkpoint,
    progress: WorkProgress,
) -> bool:
    """The contract both loops share: gate, reserve, write, steer, checkpoint; True when done.
    The throttle's holds and waits are on purpose: they do not count toward a stall."""
    while True:
        with progress.holding():
            if not _may_start_chunk(throttle, deadline):
                return False
        step = next(steps, None)
        if step is None:
            return True
        with progress.holding():
            throttle.acquire(step.rows)
        began = time.monotonic()
        read, inserted = step.write()
        spent = time.monotonic() - began
        throttle.record(read, spent)
        with progress.holding():
            throttle.rest_after(spent)
        checkpoint(step.end, read, step.end is None)
        tally.read, tally.inserted, tally.chunks = tally.read + read, tally.inserted + inserted, tally.chunks + 1
        if step.end is None:
            return True


# -- PostgreSQL or MySQL → PostgreSQL: COPY data, never decoded ---------------------------
def _stream_loop(
    stream_class: type[PostgresStream | MySQLStream],
    source: Engine,
    target: Engine,
    mapping: TableMapping,
    remaining: KeyRange,
    throttle: Throttle,
    deadline: float | None,
    tally: _Tally,
    checkpoint: Checkpoint,
    progress: WorkProgress,
) -> bool:
    writer = PostgresWriter(target, mapping, mapping.target_table_obj(target))
    try:
        stream = _guarded(mapping, remaining, stream_class, source, mapping, writer)
        try:
            with progress.on_stall(_canceller(target, writer.conn)), progress.on_stall(_canceller(source, stream.conn)):
                steps = _stream_steps(stream, writer, mapping, remaining, throttle)
                return _run_steps(steps, throttle, deadline, tally, checkpoint, progress)
        finally:
            stream.close()
    finally:
        writer.close()


def _stream_steps(
    stream: PostgresStream | MySQLStream,
    writer: PostgresWriter,
    mapping: TableMapping,
    remaining: KeyRange,
    throttle: Throttle,
) -> Iterator[_Step]:
    """Chunks cut by a keyset boundary query as each one is about to start (its size is current)."""
    lo, hi = remaining.lo, remaining.hi
    while True:
        rows = throttle.chunk_rows()
        end = _guarded(mapping, KeyRange(lo, hi), stream.chunk_end, KeyRange(lo, hi), rows)
        chunk = KeyRange(lo, end if end is not None else hi)
        yield _Step(rows, end, functools.partial(_guarded, mapping, chunk, stream.copy_chunk, writer, chunk))
        if end is None:
            return
        lo = end


# -- every other pair: rows through Python ------------------------------------------------
def _rows_loop(
    source: Engine,
    target: Engine,
    mapping: TableMapping,
    remaining: KeyRange,
    throttle: Throttle,
    deadline: float | None,
    tally: _Tally,
    checkpoint: Checkpoint,
    progress: WorkProgress,
) -> bool:
    src_table, tgt_table = mapping.source_table_obj(source), mapping.target_table_obj(target)
    convert = row_converter(mapping, src_table, tgt_table, target.dialect)
    writer: PostgresWriter | MySQLWriter | SQLiteWriter = dialect_for(target).bulk_writer(target, mapping, tgt_table)
    reader = _ChunkReader(source, mapping, src_table, remaining, throttle, progress)
    try:
        steps = (
            _Step(
                len(c.rows),
                None if c.final else c.range.hi,
                functools.partial(_write_chunk, writer, mapping, convert, c),
            )
            for c in reader
        )
        with progress.on_stall(_canceller(target, writer.conn)):
            return _run_steps(steps, throttle, deadline, tally, checkpoint, progress)
    finally:
        reader.stop()
        writer.close()


def _write_chunk(
    writer: PostgresWriter | MySQLWriter | SQLiteWriter,
    mapping: TableMapping,
    convert: Callable[[Sequence[Row]], list[Row]] | None,
    chunk: Chunk,
) -> tuple[int, int]:
    rows = _prepared(mapping, chunk.rows, convert)
    return len(chunk.rows), _guarded(mapping, chunk.range, writer.write_rows, rows, chunk.range)


def _prepared(
    mapping: TableMapping, rows: list[Row], convert: Callable[[Sequence[Row]], list[Row]] | None
) -> Sequence[Row]:
    if mapping.transform is not None and rows:
        rows = transform_rows(mapping, rows)
    return convert(rows) if convert is not None else rows


def transform_rows(mapping: TableMapping, rows: list[Row]) -> list[Row]:
    """Run the spec's pandas transform over a chunk; values come back as plain Python objects."""
    import pandas as pd

    frame = mapping.transform_frame(pd.DataFrame.from_records(rows, columns=list(mapping.target_columns)))
    return list(frame.itertuples(index=False, name=None))


def _canceller(engine: Engine, driver_conn: Any) -> Callable[[], None]:
    """Aborts the statement running on one of the loop's connections (called from the heartbeat)."""
    return functools.partial(dialect_for(engine).cancel_statement, engine, driver_conn)


class _ChunkReader:
    """Reads keyset chunks in a thread, one ahead of the writer (a bounded queue)."""

    def __init__(
        self,
        engine: Engine,
        mapping: TableMapping,
        table: sa.Table,
        remaining: KeyRange,
        throttle: Throttle,
        progress: WorkProgress,
    ) -> None:
        self.engine, self.mapping, self.table, self.remaining, self.throttle = (
            engine,
            mapping,
            table,
            remaining,
            throttle,
        )
        self.progress = progress
        self.key_index = [mapping.target_columns.index(mapping.target_key[i]) for i in range(len(mapping.key))]
        self.queue: queue.Queue[Chunk | BaseException | None] = queue.Queue(maxsize=1)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="backfill-reader", daemon=True)
        self.thread.start()

    def __iter__(self) -> Iterator[Chunk]:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.final:
                return

    def _run(self) -> None:
        try:
            lo, hi = self.remaining.lo, self.remaining.hi
            with self.engine.connect() as conn, dialect_for(self.engine).utc_session(conn):
                cancel = _canceller(self.engine, conn.connection.driver_connection)
                with self.progress.on_stall(cancel):
                    self._read_all(conn, lo, hi)
        except BaseException as exc:
            self._put(exc)

    def _read_all(self, conn: sa.Connection, lo: Key | None, hi: Key | None) -> None:
        while not self.stopped.is_set():
            chunk = self._read(conn, lo, hi)
            conn.commit()  # no long transaction held open on the source
            self._put(chunk)
            if chunk.final:
                return
            lo = chunk.range.hi

    def _read(self, conn: sa.Connection, lo: Key | None, hi: Key | None) -> Chunk:
        rows_wanted = self.throttle.chunk_rows()
        where = range_clause(self.table, self.mapping.key, lo, hi, dialect_for(self.engine))
        query = self.mapping.select_source(self.table).where(where).limit(rows_wanted)
        rows = _guarded(self.mapping, KeyRange(lo, hi), _fetch, conn, query)
        final = len(rows) < rows_wanted
        last = tuple(rows[-1][i] for i in self.key_index) if rows else lo
        return Chunk(rows, KeyRange(lo, hi if final else last), final)

    def _put(self, item: Chunk | BaseException) -> None:
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)


def _fetch(conn: sa.Connection, query: sa.Select[Any]) -> list[Row]:
    return [tuple(r) for r in conn.execute(query)]


def _guarded(mapping: TableMapping, key_range: KeyRange, work: Callable[..., Any], *args: Any) -> Any:
    """Run database work; driver errors become ``CopyError`` / ``TransientCopyError`` naming the range."""
    try:
        return work(*args)
    except CopyError:
        raise
    except Exception as exc:
        error = copy_error(mapping.source_table, key_range.describe(), exc)
        if error is None:
            raise
        raise error from exc
