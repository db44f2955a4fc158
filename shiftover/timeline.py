"""A migration's timeline as a picture: phases over time, rows copied, shadow-read mismatch rate.

``read_timeline`` gathers the series from the control store (plain data, testable without a
plot); ``render_png`` draws them with matplotlib (imported lazily, headless Agg backend).
The story artifact embeds the PNG as a data URI.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa

from shiftover.control import schema
from shiftover.control.store import ControlStore
from shiftover.metrics import SHADOW_MISMATCHES, SHADOW_READS


@dataclass(frozen=True)
class Timeline:
    migration: str
    phases: list[tuple[datetime, str]] = field(default_factory=list)  # (entered at, phase)
    rows_copied: list[tuple[datetime, int]] = field(default_factory=list)  # cumulative, by checkpoint time
    mismatch_rate: list[tuple[datetime, float, int]] = field(default_factory=list)  # (at, rate, reads)
    approval_waits: list[tuple[datetime, datetime | None, str]] = field(default_factory=list)  # (asked, answered, step)
    rollbacks: list[datetime] = field(default_factory=list)


# Sizes at the UI's width (the story is about 900 px wide there): at 8-9 pt and 80 dpi the labels
# were unreadable. tests/cutover/test_story.py holds every text at FONT_PT or more.
FONT_PT = 12
DPI = 100


def read_timeline(store: ControlStore, migration: str) -> Timeline:
    """Phase changes, copy progress, shadow-read counters, approval waits and rollbacks of one migration."""
    phases = [(h.at, h.phase) for h in store.history(migration)]
    return Timeline(
        migration,
        phases,
        _rows_copied(store, migration),
        _mismatch_rate(store, migration),
        _approval_waits(store, migration),
        [e["at"] for e in store.audit_entries(migration, action="rollback")],
    )


def _approval_waits(store: ControlStore, migration: str) -> list[tuple[datetime, datetime | None, str]]:
    t = schema.approval_requests
    query = sa.select(t.c.requested_at, t.c.answered_at, t.c.step).where(t.c.migration == migration).order_by(t.c.id)
    with store.engine.connect() as conn:
        return [(r.requested_at, r.answered_at, r.step) for r in conn.execute(query)]


def _rows_copied(store: ControlStore, migration: str) -> list[tuple[datetime, int]]:
    t = schema.checkpoints
    query = sa.select(t.c.updated_at, t.c.rows_copied).where(t.c.migration == migration).order_by(t.c.updated_at)
    total, points = 0, []
    with store.engine.connect() as conn:
        for at, rows in conn.execute(query):
            total += int(rows or 0)
            points.append((at, total))
    return points


def _mismatch_rate(store: ControlStore, migration: str) -> list[tuple[datetime, float, int]]:
    """Mismatches / reads per flush of the dual-writers' counters."""
    m = schema.metrics
    query = (
        sa.select(m.c.at, m.c.name, sa.func.sum(m.c.value))
        .where(m.c.migration == migration, m.c.name.in_([SHADOW_READS, SHADOW_MISMATCHES]))
        .group_by(m.c.at, m.c.name)
        .order_by(m.c.at)
    )
    by_time: dict[datetime, dict[str, float]] = {}
    with store.engine.connect() as conn:
        for at, name, value in conn.execute(query):
            by_time.setdefault(at, {})[name] = float(value or 0)
    return [
        (at, v.get(SHADOW_MISMATCHES, 0.0) / v[SHADOW_READS], int(v[SHADOW_READS]))
        for at, v in by_time.items()
        if v.get(SHADOW_READS)
    ]


def render_png(timeline: Timeline, width_inches: float = 9.0, dpi: int = DPI) -> bytes:
    """Three stacked panels sharing the time axis; PNG bytes."""
    from matplotlib import pyplot as plt

    fig = draw(timeline, width_inches)
    try:
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=dpi)
        return out.getvalue()
    finally:
        plt.close(fig)


def draw(timeline: Timeline, width_inches: float = 9.0):  # type: ignore[no-untyped-def]
    """The figure: phases (approval waits shaded, rollbacks marked), rows copied, shadow mismatch %."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    with plt.rc_context(
        {
            "font.size": FONT_PT,
            "axes.titlesize": FONT_PT,
            "xtick.labelsize": FONT_PT,
            "ytick.labelsize": FONT_PT,
            "legend.fontsize": FONT_PT,
            "figure.titlesize": FONT_PT + 2,
        }
    ):
        fig, (top, mid, low) = plt.subplots(
            3, 1, sharex=True, figsize=(width_inches, 7.5), gridspec_kw={"height_ratios": [1.6, 1, 1]}
        )
        _draw_phases(top, timeline)
        copied: list[tuple[datetime, float]] = [(a, float(r)) for a, r in timeline.rows_copied]
        if copied:  # the total holds until now
            copied.append((max(datetime.now(UTC), copied[-1][0]), copied[-1][1]))
        _draw_series(mid, copied, "rows copied", "tab:blue", fill=True)
        _draw_series(low, [(a, r * 100) for a, r, _ in timeline.mismatch_rate], "shadow mismatch %", "tab:red")
        for ax in (top, mid, low):
            _draw_marks(ax, timeline, legend=ax is top)
        fig.suptitle(f"Migration {timeline.migration}")
        fig.autofmt_xdate()
        fig.tight_layout()
    return fig


def _draw_marks(ax, timeline: Timeline, legend: bool) -> None:  # type: ignore[no-untyped-def]
    """Approval waits as shaded spans (until answered, or now), rollbacks as red lines."""
    now = datetime.now(UTC)
    for i, (asked, answered, _step) in enumerate(timeline.approval_waits):
        ax.axvspan(
            asked, answered or now, color="tab:orange", alpha=0.25, label="waiting for approval" if i == 0 else None
        )
    for i, at in enumerate(timeline.rollbacks):
        ax.axvline(at, color="tab:red", linewidth=2, label="rollback" if i == 0 else None)
    if legend and (timeline.approval_waits or timeline.rollbacks):
        ax.legend(loc="lower right")


def _draw_phases(ax, timeline: Timeline) -> None:  # type: ignore[no-untyped-def]
    """One bar per phase, from when it was entered until the next phase (or now)."""
    end = datetime.now(UTC)
    names = list(dict.fromkeys(p for _, p in timeline.phases))
    for (start, phase), nxt in zip(timeline.phases, [*timeline.phases[1:], (end, "")], strict=True):
        color = "tab:red" if phase == "rolled_back" else "tab:green"
        ax.barh(names.index(phase), (nxt[0] - start).total_seconds() / 86_400, left=start, height=0.6, color=color)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_title("phases", loc="left")


def _draw_series(
    ax,
    points: list[tuple[datetime, float]],
    label: str,
    color: str,  # type: ignore[no-untyped-def]
    fill: bool = False,
) -> None:
    ax.set_title(label, loc="left")
    if not points:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="grey")
        return
    times, values = [a for a, _ in points], [v for _, v in points]
    ax.step(times, values, where="post", color=color)
    if fill:
        ax.fill_between(times, values, step="post", color=color, alpha=0.25)
    ax.set_ylim(bottom=0)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()
