"""Rollback: from any reversible phase, reads and writes return to the old store, and nothing
the new store alone holds is lost (``shiftover.rollback`` has the procedure).

Its own deployment (one click in the UI) and ``shiftover rollback``; application clients see the
flip within their flag TTL. It needs the spec and the control store; the databases only when the
new store leads (writes switched), to copy what only it holds to the old one first. It never waits
for the lease: it revokes it, so the run that held it stops, and cancels its pending approvals
(their paused Prefect runs too, so the Resume form can no longer be used).
"""

from __future__ import annotations

from uuid import UUID

from prefect import flow, get_run_logger

from shiftover.approvals import ROLLBACK_ANSWERER, ApprovalRequest
from shiftover.control.store import DEFAULT_URL
from shiftover.flags.routing import WriteMode
from shiftover.flows.context import open_plan
from shiftover.flows.credentials import admit_control_url
from shiftover.flows.runtime import actor
from shiftover.flows.story import publish_story_quietly
from shiftover.migration import resume_migration
from shiftover.phases import Phase
from shiftover.rollback import roll_back


@flow(name="rollback")
def rollback(
    spec_path: str, control_url: str = DEFAULT_URL, reason: str = "manual rollback", keep_dual_write: bool = True
) -> dict[str, object]:
    """Flip reads to 0% and writes to the old store; audited. Refused once the old store stopped being written."""
    admit_control_url(control_url)
    opened = open_plan(spec_path, control_url, register=False)
    state, name = opened.state, opened.spec.name
    if state.phase is Phase.ROLLED_BACK:
        return {"phase": state.phase, "note": "already rolled back"}
    leads = state.routing.writes is WriteMode.DUAL_NEW_PRIMARY
    m = resume_migration(opened.spec, opened.store, state.phase) if leads else None  # the drain needs both stores
    result = roll_back(
        opened.store,
        opened.plan,
        state,
        actor(),
        reason,
        old=m.source if m else None,
        new=m.target if m else None,
        mapping=m.mapping if m else None,
        options=m.spec.validation if m else None,
        keep_dual_write=keep_dual_write,
    )
    cancel_paused_runs(result.cancelled, name, f"cancelled by a rollback: {reason}")
    get_run_logger().info("%s rolled back from %s: %s", name, state.phase, result.as_dict())
    publish_story_quietly(opened.store, opened.spec)
    return result.as_dict()


def cancel_paused_runs(requests: list[ApprovalRequest], migration: str, reason: str) -> None:
    """Answer every Prefect run paused on a cancelled request with a rejection, so it wakes, finds
    its request cancelled and stops, and its Resume form is gone (a cancelled Prefect state would
    leave an in-process pause polling until its time-out).

    Best effort (the run may be gone or answered): the control store already refuses any answer
    to a cancelled request."""
    from prefect.flow_runs import resume_flow_run

    log = get_run_logger()
    answer = {"approver": ROLLBACK_ANSWERER, "confirm_name": migration, "reason": reason[:500], "decision": "reject"}
    for request in requests:
        kind, _, run_id = request.holder.partition("/")
        if kind != "flow-run" or not run_id:
            continue
        try:
            resume_flow_run(UUID(run_id), run_input=answer)
        except Exception as exc:
            log.warning("could not close the pause of run %s: %s", run_id, exc)
