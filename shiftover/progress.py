"""Progress bars for a long ``shiftover run`` on a terminal: rows copied by the backfill (of the
source's estimate, rows/s, ETA) and the validate stage's gates, read from the control store while
the run writes it (the backfill's checkpoints, the diff's segments, the recorded gate results), so
the bars show what is committed, whichever thread or worker process did the work.

The bars render on a rich ``Console`` the caller owns (the CLI passes the one Prefect's console
log handler prints on, so log lines scroll above the bars instead of through them). Piped output
gets no bars: the CLI only starts them when that console is a terminal.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from rich.console import Console
from rich.default_styles import DEFAULT_STYLES
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn, TimeRemainingColumn
from rich.text import Text
from rich.theme import Theme
from sqlalchemy.engine import Engine

from shiftover.backfill.checkpoints import backfill_status
from shiftover.control import schema

POLL_SECONDS = 0.5
BAR_STYLES = {name: style for name, style in DEFAULT_STYLES.items() if name.startswith(("bar.", "progress."))}


@dataclass(frozen=True)
class RunProgress:
    """What the control store says a run has done so far."""

    rows_copied: int  # the backfill's checkpoints (all runs of it: a resumed backfill starts where it stopped)
    backfill_segments: int
    backfill_segments_done: int
    diff_segments: int  # the latest checksum diff started since the run began
    diff_segments_done: int
    validate_gates_done: int  # validate-stage gate results recorded since the run began

    @property
    def backfill_started(self) -> bool:
        return self.backfill_segments > 0

    @property
    def backfill_complete(self) -> bool:
        return self.backfill_started and self.backfill_segments_done == self.backfill_segments


def read_progress(store: Engine, migration: str, since: datetime) -> RunProgress:
    """The run's progress from the control store (``since``: when the run started, naive UTC)."""
    backfill = backfill_status(store, migration)
    seg, gates = schema.diff_segments, schema.gate_results
    latest_diff = (
        sa.select(seg.c.run_id)
        .where(seg.c.migration == migration, seg.c.updated_at >= since)
        .order_by(seg.c.updated_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    finished = sa.func.sum(sa.case((seg.c.state != "pending", 1), else_=0))
    diff_query = sa.select(sa.func.count(), finished).where(seg.c.migration == migration, seg.c.run_id == latest_diff)
    gates_query = (
        sa.select(sa.func.count())
        .select_from(gates)
        .where(gates.c.migration == migration, gates.c.stage == "validate", gates.c.at >= since)
    )
    with store.connect() as conn:
        diff_total, diff_done = conn.execute(diff_query).one()
        gates_done = conn.execute(gates_query).scalar_one()
    return RunProgress(
        rows_copied=backfill.rows_copied,
        backfill_segments=backfill.segments,
        backfill_segments_done=backfill.segments_done,
        diff_segments=int(diff_total or 0),
        diff_segments_done=int(diff_done or 0),
        validate_gates_done=int(gates_done or 0),
    )


class _Counts(ProgressColumn):
    """'1,200 / 2,000 rows' (or '2 / 3 gates')."""

    def render(self, task: Task) -> Text:
        total = "?" if task.total is None else f"{int(task.total):,}"
        return Text(f"{int(task.completed):,} / {total} {task.fields.get('unit', '')}", style="progress.download")


class _Rate(ProgressColumn):
    """'23,588 rows/s' from rich's own samples of the completed count (blank for the gates)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if task.fields.get("unit") != "rows" or not speed:
            return Text("")
        return Text(f"{speed:,.0f} rows/s", style="progress.data.speed")


class RunBars:
    """The bars of one run: the backfill's rows (of ``source_rows()``, asked once the backfill has
    started) and the validate stage's ``validate_gates`` gates, with the checksum's segments."""

    def __init__(self, console: Console, *, source_rows: Callable[[], int], validate_gates: int) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description:<9}"),
            BarColumn(),
            _Counts(),
            _Rate(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
            console=console,
            redirect_stdout=False,  # the CLI prints its result on stdout after the run
            redirect_stderr=True,  # stray writes to stderr scroll above the bars
        )
        self._source_rows = source_rows
        self.backfill: TaskID = self.progress.add_task("backfill", total=None, visible=False, unit="rows", note="")
        self.validate: TaskID = self.progress.add_task(
            "validate", total=validate_gates, visible=False, unit="gates", note=""
        )
        self._estimate: int | None = None

    def show(self, p: RunProgress) -> None:
        """Move the bars to ``p``."""
        if p.backfill_started:
            if self._estimate is None:
                self._estimate = self._source_rows()
            # an estimate can be short (rows inserted since): the bar never runs past its end,
            # and a finished backfill ends at what it copied
            total = p.rows_copied if p.backfill_complete else max(self._estimate, p.rows_copied)
            note = f"{p.backfill_segments_done}/{p.backfill_segments} segments"
            self.progress.update(self.backfill, completed=p.rows_copied, total=total, visible=True, note=note)
        if p.validate_gates_done or p.diff_segments:
            # the checksum's segments while the stage runs (later stages' checksums start diffs of their own)
            running = p.validate_gates_done < (self.progress.tasks[self.validate].total or 0)
            note = f"checksum {p.diff_segments_done}/{p.diff_segments} segments" if p.diff_segments and running else ""
            self.progress.update(self.validate, completed=p.validate_gates_done, visible=True, note=note)

    def completed(self, task: TaskID) -> tuple[float, float | None]:
        """(completed, total) of one bar, as drawn."""
        t = self.progress.tasks[task]
        return t.completed, t.total


@contextmanager
def watch_run(bars: RunBars, read: Callable[[], RunProgress], *, interval: float = POLL_SECONDS) -> Iterator[RunBars]:
    """Show ``bars`` live while the block runs, moved by ``read()`` every ``interval`` seconds in a
    thread and once more at the end (a failed read is skipped: the run goes on without a bar)."""
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(interval):
            _show(bars, read)

    watcher = threading.Thread(target=poll, name="shiftover-progress", daemon=True)
    console = bars.progress.console
    # Prefect's console handler builds its theme without rich's defaults (inherit=False): the bars'
    # own styles go on top of it while they are live, leaving its log styles as they are
    console.push_theme(Theme(BAR_STYLES, inherit=False), inherit=True)
    try:
        with bars.progress:
            watcher.start()
            try:
                yield bars
            finally:
                stop.set()
                watcher.join()
                _show(bars, read)
    finally:
        console.pop_theme()


def _show(bars: RunBars, read: Callable[[], RunProgress]) -> None:
    try:
        bars.show(read())
    except Exception:  # a locked or busy control store: the next poll tries again
        pass
