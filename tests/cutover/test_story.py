"""The story artifact: plan, phase timeline, gates, approvals, and the timeline picture."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shiftover.control import schema
from shiftover.control.store import ControlStore, utcnow
from shiftover.metrics import SHADOW_MISMATCHES, SHADOW_READS
from shiftover.phases import Phase
from shiftover.spec import parse_spec
from shiftover.story import render_picture, render_story
from shiftover.timeline import read_timeline, render_png

SPEC = parse_spec(
    {
        "name": "story",
        "source": {"url": "sqlite:///old.db", "table": "orders"},
        "target": {"url": "sqlite:///new.db", "table": "orders"},
        "key": ["id"],
    }
)


@pytest.fixture
def told(control_store: ControlStore) -> ControlStore:
    s, now = control_store, utcnow()
    s.register("story", {})
    for phase in (Phase.DUAL_WRITING, Phase.BACKFILLING, Phase.BACKFILLED, Phase.VALIDATED, Phase.SHADOW_READING):
        s.transition("story", phase, "test", f"to {phase}")
    with s.engine.begin() as conn:
        conn.execute(
            schema.checkpoints.insert(),
            [
                {
                    "migration": "story",
                    "segment": i,
                    "rows_copied": 500,
                    "state": "done",
                    "updated_at": now - timedelta(seconds=30 - i),
                }
                for i in range(4)
            ],
        )
        conn.execute(
            schema.metrics.insert(),
            [
                {"migration": "story", "name": SHADOW_READS, "value": 100, "at": now - timedelta(seconds=5)},
                {"migration": "story", "name": SHADOW_MISMATCHES, "value": 2, "at": now - timedelta(seconds=5)},
                {"migration": "story", "name": SHADOW_READS, "value": 100, "at": now},
            ],
        )
    s.audit("story", "alice", "approval", {"step": "switch_writes", "approver": "alice", "reason": "green"})
    return s


def test_timeline_series_come_from_the_control_store(told: ControlStore) -> None:
    timeline = read_timeline(told, "story")
    assert [p for _, p in timeline.phases] == [
        "planned",
        "dual_writing",
        "backfilling",
        "backfilled",
        "validated",
        "shadow_reading",
    ]
    assert [r for _, r in timeline.rows_copied] == [500, 1000, 1500, 2000]
    assert [(rate, reads) for _, rate, reads in timeline.mismatch_rate] == [(0.02, 100), (0.0, 100)]


def test_the_picture_is_a_png_embedded_in_the_story(told: ControlStore) -> None:
    png = render_png(read_timeline(told, "story"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    picture = render_picture(told, SPEC)
    assert picture.startswith("![timeline of story](data:image/png;base64,iVBOR")
    story = render_story(told, SPEC)
    for section in ("## Timeline", "## Approvals", "## Plan", "| shadow_reading |", "alice"):
        assert section in story
