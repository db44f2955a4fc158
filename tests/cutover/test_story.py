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


def test_the_routing_history_replays_every_flag_change(control_store: ControlStore) -> None:
    from shiftover import cutover as flips
    from shiftover.story import routing_history

    control_store.register("story", {})
    flips.enable_dual_write(control_store.engine, "story", "alice")
    flips.move_reads(control_store.engine, "story", 10, "alice")
    flips.move_reads(control_store.engine, "story", 100, "bob")
    rows = routing_history(control_store, "story")
    assert [(r["changed"], r["writes"], r["reads_new_percent"], r["by"]) for r in rows] == [
        ("writes", "dual_old_primary", 0.0, "alice"),
        ("reads_percent", "dual_old_primary", 10.0, "alice"),
        ("reads_percent", "dual_old_primary", 100.0, "bob"),
    ]


def test_the_picture_is_legible_and_marks_approval_waits_and_rollbacks(told: ControlStore) -> None:
    from matplotlib import pyplot as plt
    from matplotlib.text import Text

    from shiftover.timeline import FONT_PT, draw

    now = utcnow()
    with told.engine.begin() as conn:
        conn.execute(
            schema.approval_requests.insert().values(
                migration="story",
                step="switch_writes",
                epoch=1,
                holder="flow-run/x",
                state="approved",
                requested_at=now - timedelta(seconds=20),
                answered_at=now - timedelta(seconds=10),
                answered_by="alice",
            )
        )
    told.audit("story", "bob", "rollback", {"reason": "drill"})
    timeline = read_timeline(told, "story")
    assert [step for _, _, step in timeline.approval_waits] == ["switch_writes"] and len(timeline.rollbacks) == 1
    fig = draw(timeline)
    try:
        texts = [t for t in fig.findobj(Text) if t.get_text().strip()]
        labels = {t.get_text() for t in texts}
        assert {"waiting for approval", "rollback", "phases", "rows copied"} <= labels
        small = sorted({(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < FONT_PT})
        assert not small, f"text below {FONT_PT} pt: {small[:5]}"
    finally:
        plt.close(fig)
