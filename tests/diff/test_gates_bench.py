"""bench/gates.py at a tiny size: it builds, measures both paths, and they agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gates.py"


def test_gates_bench_runs_tiny() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--rows", "2000", "--engines", "sqlite", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert "default suite in SQL" in out and "same verdicts: True" in out, out
    figures = json.loads(out.strip().splitlines()[-1])  # the last line holds every figure
    assert figures["sqlite_same_verdicts"] is True and figures["sqlite_rows"] == 2000
    assert figures["sqlite_default_sql_s"] > 0 and figures["gx_import_s"] > 0
