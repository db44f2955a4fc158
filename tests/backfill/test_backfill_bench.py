"""The benchmark runs end to end at a tiny size (its figures are not asserted: it is not a timed test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "backfill.py"


@pytest.mark.postgres
@pytest.mark.mariadb
def test_bench_runs_at_a_tiny_size(pg_database, mariadb_database) -> None:  # type: ignore[no-untyped-def]
    # pg_database and mariadb_database are requested only to skip (or fail in CI) without the servers
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--rows",
            "2000",
            "--small-rows",
            "1000",
            "--baseline-rows",
            "1000",
            "--chunk-rows",
            "500",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "zero diff (count + md5 of every row, both targets): True" in out
    for label in ("vs COPY ceiling", "vs executemany", "peak RSS"):
        assert label in out
    figures = json.loads(out.strip().splitlines()[-1])  # the last line holds every figure
    assert figures["zero_diff"] is True and figures["pg_pg_vs_copy_ceiling"] > 0
