"""Approvals before irreversible steps: a typed form that Prefect shows on the paused run.

The form is built per migration so the *server* refuses bad input and the run stays paused:
the approver may not be empty (and must be on the allow-list when the spec has one), and
the confirmation must be the migration's exact name. The flow checks the answer again
(``check_approval``) because a form is only as good as its last validation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from prefect.input import RunInput
from pydantic import Field, create_model

from shiftover.control.store import ControlStore
from shiftover.errors import ApprovalError
from shiftover.story import artifact_key

AUTO_APPROVER = "auto-approved (demo)"


class Approval(RunInput):
    """What a person fills in to let an irreversible step go ahead."""

    approver: str = Field(min_length=1, description="Who approves (must not be empty)")
    confirm_name: str = Field(min_length=1, description="Type the migration's name to confirm")
    reason: str = Field(default="", description="Why it is safe to go ahead")
    decision: Literal["approve", "reject"] = Field(default="approve", description="Reject stops the run here")


@dataclass(frozen=True)
class ApprovalRecord:
    step: str
    approver: str
    reason: str
    automatic: bool

    def as_detail(self) -> dict[str, Any]:
        return {"step": self.step, "approver": self.approver, "reason": self.reason, "automatic": self.automatic}


def approval_form(migration: str, approvers: tuple[str, ...] = ()) -> type[Approval]:
    """An ``Approval`` subclass whose JSON schema pins the confirmation (and the approvers)."""
    fields: dict[str, Any] = {
        "confirm_name": (str, Field(pattern=f"^{re.escape(migration)}$", description=f"Type {migration!r} to confirm"))
    }
    if approvers:  # otherwise the base class's non-empty approver stands
        allowed = "|".join(re.escape(a) for a in approvers)
        fields["approver"] = (str, Field(pattern=f"^({allowed})$", description=f"One of: {', '.join(approvers)}"))
    return create_model("Approval", __base__=Approval, **fields)  # type: ignore[call-overload, no-any-return]


def check_approval(answer: Approval, migration: str, approvers: tuple[str, ...], step: str) -> ApprovalRecord:
    """Re-check a submitted form; raises ``ApprovalError`` naming what is wrong."""
    approver = answer.approver.strip()
    if answer.decision == "reject":
        raise ApprovalError(
            f"{step!r} rejected by {approver or 'an empty approver'}: {answer.reason or 'no reason given'}"
        )
    if not approver:
        raise ApprovalError(f"approval of {step!r} refused: the approver is empty")
    if approvers and approver not in approvers:
        raise ApprovalError(
            f"approval of {step!r} refused: {approver!r} is not an allowed approver ({', '.join(approvers)})"
        )
    if answer.confirm_name != migration:
        raise ApprovalError(
            f"approval of {step!r} refused: confirmation {answer.confirm_name!r} "
            f"is not the migration's name {migration!r}"
        )
    return ApprovalRecord(step=step, approver=approver, reason=answer.reason, automatic=False)


def auto_approval(step: str) -> ApprovalRecord:
    """The record of an approval answered by the demo, marked as automatic in the audit log."""
    return ApprovalRecord(step=step, approver=AUTO_APPROVER, reason="demo run answers approvals itself", automatic=True)


def request_approval(
    store: ControlStore,
    migration: str,
    step: str,
    summary: str,
    *,
    approvers: tuple[str, ...],
    timeout_seconds: float,
    poll_interval_seconds: int = 10,
    auto_approve: bool = False,
    suspend: bool | None = None,
) -> ApprovalRecord:
    """Pause the calling flow run until a valid approval arrives; audited either way.

    Must be called from a flow (never a task). A refused answer (rejection, or a form that
    passed the server but fails ``check_approval``) ends the wait with ``ApprovalError``;
    a time-out raises ``ApprovalError`` too, and the migration stays in its last safe phase.

    ``suspend`` (default: when this run was started from a deployment and is not a subflow)
    waits with ``suspend_flow_run``: the process exits, no worker slot is held, and the flow
    re-runs from the top once resumed, finding the answer under the same key.
    """
    from prefect.artifacts import create_markdown_artifact
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run, suspend_flow_run

    if auto_approve:
        record = auto_approval(step)
        store.audit(migration, record.approver, "approval", record.as_detail())
        return record
    create_markdown_artifact(
        key=artifact_key(migration, "approve", step), markdown=summary, description=f"approval requested: {step}"
    )
    store.audit(migration, "shiftover", "approval_requested", {"step": step, "timeout_seconds": timeout_seconds})
    form = approval_form(migration, approvers).with_initial_data(description=summary)
    key = pause_key(step)
    try:
        if suspend if suspend is not None else suspendable_run():
            answer = suspend_flow_run(wait_for_input=form, timeout=int(timeout_seconds), key=key)
        else:
            answer = pause_flow_run(
                wait_for_input=form, timeout=int(timeout_seconds), poll_interval=poll_interval_seconds, key=key
            )
    except FlowPauseTimeout:
        store.audit(migration, "shiftover", "approval_timed_out", {"step": step})
        raise ApprovalError(f"no approval for {step!r} within {timeout_seconds:g}s; nothing was changed") from None
    try:
        record = check_approval(answer, migration, approvers, step)
    except ApprovalError as exc:
        store.audit(migration, answer.approver or "(empty)", "approval_refused", {"step": step, "why": str(exc)})
        raise
    store.audit(migration, record.approver, "approval", record.as_detail())
    return record


def pause_key(step: str) -> str:
    """The pause's key (Prefect allows lowercase letters, digits and dashes): one per step."""
    return artifact_key("approve", step)


def suspendable_run() -> bool:
    """True for a top-level flow run started from a deployment (only those can be suspended)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx is not None else None
    return run is not None and run.deployment_id is not None and run.parent_task_run_id is None
