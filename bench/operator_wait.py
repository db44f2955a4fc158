"""An operator's wait: ``shiftover run`` from process start to its first stage, with a temporary
Prefect server per run (no server configured) against the project's long-lived one
(``shiftover server start``), measured in the same run.

    .venv/bin/python bench/operator_wait.py             # 3 timed runs per mode, after one warm-up each
    .venv/bin/python bench/operator_wait.py --runs 1    # quick

Each run migrates a fresh 1,000-row SQLite table and stops after its first stage (dual-write);
"to first stage" is process start to the control store's registration of the migration (the
evaluator's first write, just before the dual-write stage acts); "total" is process start to exit
(the stage itself holds 2 s for flag clients to see the flip, and the run ends by rendering its
story). Issue 12 asks for under 3 s to the first stage on a warm machine.

Then it runs the README's first command's migration, ``shiftover demo`` (``--demo-rows``, 100k by
default; 0 skips it), with a fresh Prefect home, and prints the seconds spent reaching each phase
(from the demo's control store), each validate gate's (from its recorded result) and the whole command's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

SPEC = (
    "name: bench\nsource: {url: 'sqlite:///old.db', table: orders}\n"
    "target: {url: 'sqlite:///new.db', table: orders}\nkey: id\nbackfill: {create_target: true}\n"
)


def shiftover(args: list[str], cwd: Path | str, env: dict[str, str], timeout: float = 600) -> float:
    """Run the ``shiftover`` command; its wall seconds (exits naming the command when it fails)."""
    began = time.monotonic()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "shiftover"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"shiftover {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - began


def audit_rows(control_db: Path | str, query: str) -> list[Any]:
    engine = sa.create_engine(f"sqlite:///{control_db}")
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(query)).all())
    finally:
        engine.dispose()


def one_run(workdir: Path, env: dict[str, str]) -> tuple[float, float]:
    """(seconds to first stage, seconds in all) for one ``shiftover run`` in ``workdir``."""
    for stale in ("new.db", ".shiftover/control.db"):
        (workdir / stale).unlink(missing_ok=True)
    began_wall = datetime.now(UTC).replace(tzinfo=None)
    total = shiftover(["run", "spec.yaml", "--stop-after", "dual_write"], workdir, env)
    [(registered,)] = audit_rows(
        workdir / ".shiftover/control.db", "SELECT min(at) FROM so_audit_log WHERE migration = 'bench'"
    )
    first = (datetime.fromisoformat(str(registered)) - began_wall).total_seconds()
    return first, total


def measure(workdir: Path, env: dict[str, str], runs: int) -> list[tuple[float, float]]:
    one_run(workdir, env)  # warm-up: file caches, Prefect's database migrations
    return [one_run(workdir, env) for _ in range(runs)]


def demo_stage_seconds(rows: int, env: dict[str, str]) -> dict[str, float]:
    """``shiftover demo`` (the README's first command) once: seconds spent reaching each phase,
    from the demo's control store, and the whole command's."""
    with tempfile.TemporaryDirectory() as tmp:
        demo = ["demo", "--rows", str(rows), "--workdir", f"{tmp}/demo"]
        total = shiftover(demo, tmp, env | {"PREFECT_HOME": f"{tmp}/prefect-home"}, timeout=1200)
        rows_ = audit_rows(
            f"{tmp}/demo/control.db", "SELECT at, detail FROM so_audit_log WHERE action = 'phase' ORDER BY id"
        )
        gates = audit_rows(
            f"{tmp}/demo/control.db", "SELECT at, gate FROM so_gate_results WHERE stage = 'validate' ORDER BY id"
        )
    seconds: dict[str, float] = {}
    validate_began = None
    for (before, _), (after, detail) in itertools.pairwise(rows_):
        phase = json.loads(detail)["phase"] if isinstance(detail, str) else detail["phase"]
        spent = (datetime.fromisoformat(str(after)) - datetime.fromisoformat(str(before))).total_seconds()
        seconds[phase] = seconds.get(phase, 0.0) + spent
        if phase == "backfilled":
            validate_began = datetime.fromisoformat(str(after))
    # the validate stage's gates, each from the end of the one before (the first from the stage's start)
    for at, gate in gates:
        ended = datetime.fromisoformat(str(at))
        if validate_began is not None:
            seconds[f"validate_gate_{gate}"] = (ended - validate_began).total_seconds()
        validate_began = ended
    seconds["whole_command"] = total
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=4391)
    parser.add_argument("--demo-rows", type=int, default=100_000, help="rows for the timed demo (0: skip it)")
    args = parser.parse_args(argv)
    from shiftover.connect import get_engine
    from shiftover.demo import create_orders

    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    base |= {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("temporary server", "project server"):
            workdir = Path(tmp) / mode.split()[0]
            workdir.mkdir()
            create_orders(get_engine(f"sqlite:///{workdir}/old.db"), rows=1_000)
            (workdir / "spec.yaml").write_text(SPEC)
            env = base | {"PREFECT_HOME": str(workdir / "prefect-home")}
            if mode == "project server":
                shiftover(["server", "start", "--port", str(args.port)], workdir, env, timeout=300)
            try:
                results[mode] = measure(workdir, env, args.runs)
            finally:
                if mode == "project server":
                    shiftover(["server", "stop"], workdir, env, timeout=60)
    print(f"{'mode':<18} {'to first stage (median)':>24} {'total (median)':>16}   runs")
    medians = {}
    for mode, rows in results.items():
        first = statistics.median(r[0] for r in rows)
        total = statistics.median(r[1] for r in rows)
        medians[mode] = (first, total)
        print(f"{mode:<18} {first:>22.1f} s {total:>14.1f} s   {[round(r[0], 1) for r in rows]}")
    ratio = medians["project server"][0] / medians["temporary server"][0]
    print(f"project server / temporary server, to first stage: {ratio:.2f}x")
    stages = demo_stage_seconds(args.demo_rows, base) if args.demo_rows else {}
    for phase, seconds in stages.items():
        print(f"demo ({args.demo_rows:,} rows): {phase:<27} {seconds:7.1f} s")
    figures = {
        "first_stage_temporary_s": round(medians["temporary server"][0], 2),
        "first_stage_project_server_s": round(medians["project server"][0], 2),
        "total_temporary_s": round(medians["temporary server"][1], 2),
        "total_project_server_s": round(medians["project server"][1], 2),
        "first_stage_project_vs_temporary": round(ratio, 3),
        "runs": args.runs,
        "demo_rows": args.demo_rows,
        **{f"demo_{phase}_s": round(seconds, 2) for phase, seconds in stages.items()},
    }
    print(json.dumps(figures))  # the last line: every figure, for scripts
    return 0


if __name__ == "__main__":
    sys.exit(main())
