"""The dual-write benchmark runs end to end at a tiny size (its numbers mean nothing here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_bench_dualwrite_tiny() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "dualwrite.py"), "--writes", "20", "--rows", "300", "--flips", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    for line in (
        "old-only",
        "dual sync",
        "dual async",
        "trigger capture",
        "async p99:",
        "sync p99:",
        "cached get read:",
        "flip -> client sees it:",
    ):
        assert line in out, out
    figures = json.loads(out.strip().splitlines()[-1])  # the last line holds every figure
    assert figures["async_p99_vs_old_only"] > 0 and figures["cached_get_us"] > 0
