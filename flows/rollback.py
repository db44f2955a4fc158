"""Rollback: from any reversible phase, reads and writes return to the old store at once.

Its own deployment (one click in the UI) and `shiftover rollback`; application clients see the
flip within their flag TTL. Only the spec and the control store are needed, not the databases,
unless writes were already switched (then queued writes are drained to the old store first)."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.runtime import actor
from shiftover.control.store import DEFAULT_URL, open_store
from shiftover.errors import PhaseError
from shiftover.flags.routing import WriteMode, read_routing
from shiftover.phases import ROLLBACK_FROM, Phase, allowed_next
from shiftover.spec import load_spec
from shiftover.story import publish_story
from tasks import routing as flips


@flow(name="rollback")
def rollback(
    spec_path: str, control_url: str = DEFAULT_URL, reason: str = "manual rollback", keep_dual_write: bool = True
) -> dict[str, object]:
    """Flip reads to 0% and writes to the old store; audited. Refused once the old store stopped being written."""
    spec = load_spec(spec_path)
    store = open_store(control_url)
    phase = store.register(spec.name, spec.model_dump(mode="json", by_alias=True))
    if phase is Phase.ROLLED_BACK:
        return {"phase": phase, "note": "already rolled back"}
    if phase not in ROLLBACK_FROM:
        raise PhaseError(spec.name, phase, Phase.ROLLED_BACK, sorted(allowed_next(phase)))
    before = read_routing(store.engine, spec.name)
    if before.writes is WriteMode.DUAL_NEW_PRIMARY:
        _drain_to_old(spec_path, control_url)
    flipped_at = flips.rollback_routing(control_url, spec.name, actor(), reason, keep_dual_write)
    store.transition(spec.name, Phase.ROLLED_BACK, actor(), reason)
    get_run_logger().info("%s rolled back from %s at %s: %s", spec.name, phase, flipped_at.isoformat(), reason)
    publish_story(store, spec)
    return {"phase": Phase.ROLLED_BACK, "from": phase, "flipped_at": flipped_at.isoformat()}


def _drain_to_old(spec_path: str, control_url: str) -> None:
    """After the write switch the old store may lag by queued writes: drain them before it leads again."""
    from flows.reconcile import reconcile

    reconcile(spec_path=spec_path, control_url=control_url)
