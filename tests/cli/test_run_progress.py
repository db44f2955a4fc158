"""`shiftover run`'s progress bars: moved by what the control store says was copied and checked,
sharing Prefect's console so log lines scroll above them, and absent from piped output."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.theme import Theme

from shiftover.connect import get_engine
from shiftover.demo import create_orders
from shiftover.progress import RunProgress
from shiftover.spec import load_spec

ROWS = 600


def _spec(tmp_path: Path) -> Path:
    create_orders(get_engine(f"sqlite:///{tmp_path}/old.db"), rows=ROWS)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: bars\nsource: {{url: 'sqlite:///{tmp_path}/old.db', table: orders}}\n"
        f"target: {{url: 'sqlite:///{tmp_path}/new.db', table: orders}}\nkey: id\n"
        # 100-row chunks at 400 rows/s: about 1.5 s of copying, so the 0.5 s polls see it partway
        "backfill: {create_target: true, chunk_rows: 100, concurrency: 2, max_rows_per_second: 400}\n"
        "gates: {validate: [row_count, checksum]}\n"
    )
    return spec


def test_the_bars_show_the_rows_the_backfill_commits_and_the_gates_run(tmp_path: Path, prefect_harness) -> None:  # type: ignore[no-untyped-def]
    from prefect.logging.handlers import PrefectConsoleHandler

    from shiftover.cli import _console_handlers, progress_for_run
    from shiftover.flows.migrate import migrate

    spec = _spec(tmp_path)
    control_url = f"sqlite:///{tmp_path}/control.db"
    # themed as Prefect's console handler themes its console: none of rich's default styles
    prefect_like = Theme({"log.info_level": "cyan"}, inherit=False)
    console = Console(file=io.StringIO(), force_terminal=True, width=140, record=True, theme=prefect_like)
    handlers = _console_handlers()
    assert handlers and all(isinstance(h, PrefectConsoleHandler) for h in handlers)
    own = [h.console for h in handlers]
    seen: list[RunProgress] = []
    with progress_for_run(console, load_spec(spec), control_url) as bars:
        show = bars.show
        bars.show = lambda p: (seen.append(p), show(p))[1]  # type: ignore[method-assign]
        assert all(h.console is console for h in handlers)  # Prefect logs print through the bars' console
        logging.getLogger("prefect.test").warning("a log line while the bars are live")
        migrate(str(spec), control_url, stop_after="validate")

    assert [h.console for h in handlers] == own  # given back after the run
    assert bars.completed(bars.backfill) == (ROWS, ROWS)
    assert bars.completed(bars.validate) == (2, 2)
    partway = [p.rows_copied for p in seen if 0 < p.rows_copied < ROWS]
    assert partway, [p.rows_copied for p in seen]  # the bar moved with the checkpoints, not only at the end
    assert sorted(p.rows_copied for p in seen) == [p.rows_copied for p in seen]
    text = console.export_text()
    assert f"{ROWS:,} / {ROWS:,} rows" in text and "2 / 2 gates" in text
    assert "a log line while the bars are live" in text


def test_piped_run_prints_no_bars_or_control_characters(tmp_path: Path, prefect_harness) -> None:  # type: ignore[no-untyped-def]
    from prefect.settings import PREFECT_API_URL

    _spec(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {"PREFECT_API_URL": str(PREFECT_API_URL.value()), "PREFECT_HOME": str(tmp_path / "prefect-home")}
    shiftover = str(Path(sys.executable).parent / "shiftover")
    run = subprocess.run(
        [shiftover, "run", "spec.yaml", "--stop-after", "validate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["phase"] == "validated"
    for stream in (run.stdout, run.stderr):
        assert not [c for c in stream if ord(c) < 32 and c not in "\n\t"], stream[-2000:]
    assert "rows/s" not in run.stderr and "backfill of bars" in run.stderr  # the logs, without bars


def test_the_demo_draws_the_same_bars_around_its_migration(tmp_path: Path, prefect_harness) -> None:  # type: ignore[no-untyped-def]
    """`shiftover demo` (the README's first command) enters the CLI's bars around its migration run."""
    from contextlib import contextmanager

    from shiftover.cli import progress_for_run
    from shiftover.demo.run import run_demo

    console = Console(file=io.StringIO(), force_terminal=True, width=140, record=True)
    entered: list[tuple[str, str]] = []
    drawn = []

    @contextmanager
    def watch(spec, control_url):  # type: ignore[no-untyped-def]
        entered.append((spec.name, control_url))
        with progress_for_run(console, spec, control_url) as bars:
            drawn.append(bars)
            yield bars

    report = run_demo(rows=300, workdir=tmp_path / "demo", requests_per_second=50, watch=watch)

    assert report.final_differences == 0
    assert entered == [("orders-v2", f"sqlite:///{(tmp_path / 'demo').resolve()}/control.db")]
    copied, total = drawn[0].completed(drawn[0].backfill)
    assert 0 < copied == total  # ends at what the checkpoints say was copied (the application inserts too)
    assert drawn[0].completed(drawn[0].validate) == (3, 3)  # row_count, checksum, expectations
    assert f"{int(copied):,} / {int(total):,} rows" in console.export_text()
