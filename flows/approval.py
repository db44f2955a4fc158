"""The approval pause: a typed form Prefect shows on the paused run, bound to a request that
the control store holds at the migration's epoch (``shiftover.approvals``).

The form is built per migration so the *server* refuses bad input and the run stays paused:
the approver may not be empty (and must be on the allow-list when the spec has one), and the
confirmation must be the migration's exact name; when the spec lists approvers' keys, a signature
too (all but a rollback's rejection). The flow checks the answer again (the signature against the
named approver's key, for this request's epoch and attempt and the answer's decision), then counts
it only if its request is still pending at the same epoch (a rollback cancels it).
"""

from __future__ import annotations

import re
import socket
from typing import Any, Literal

from prefect import get_run_logger
from prefect.input import RunInput
from pydantic import ConfigDict, Field, create_model

from shiftover.approvals import (
    REFUSED,
    ROLLBACK_ANSWERER,
    TIMED_OUT,
    ApprovalRecord,
    accept_request,
    challenge_of,
    check_approval,
    close_request,
    open_request,
    refuse_answer,
    require_pending,
)
from shiftover.errors import ApprovalError, SignatureError
from shiftover.flows.context import StagedRun
from shiftover.signing import SIGNATURE_PATTERN, Challenge
from shiftover.story import artifact_key


class Approval(RunInput):
    """What a person fills in to let an irreversible step go ahead."""

    approver: str = Field(min_length=1, description="Who approves (must not be empty)")
    confirm_name: str = Field(min_length=1, description="Type the migration's name to confirm")
    reason: str = Field(default="", description="Why it is safe to go ahead")
    decision: Literal["approve", "reject"] = Field(default="approve", description="Reject stops the run here")
    signature: str = Field(default="", description="The approver's signature (when the spec lists keys)")


def approval_form(
    migration: str, approvers: tuple[str, ...] = (), signed_for: Challenge | None = None
) -> type[Approval]:
    """An ``Approval`` subclass whose JSON schema pins the confirmation (and the approvers);
    surrounding whitespace is allowed by the patterns and trimmed by ``check_approval``.

    Patterns, although the server's refusal then quotes the regex: tried in Prefect 3's UI, a
    ``const`` confirmation is not shown at all (the form fills it in, so nobody types the name) and
    an ``enum`` approver becomes a drop-down that offers the rollback's answerer too.

    ``signed_for`` (the request's challenge, when the spec lists keys) makes the schema require a
    signature from every answerer but a rollback's rejection (a JSON Schema if/then/else the server
    evaluates), and its description gives the exact command that produces it."""
    fields: dict[str, Any] = {
        "confirm_name": (
            str,
            Field(pattern=rf"^\s*{re.escape(migration)}\s*$", description=f"Type {migration!r} to confirm"),
        )
    }
    if approvers:  # otherwise the base class's non-empty approver stands
        allowed = "|".join(re.escape(a) for a in (*approvers, ROLLBACK_ANSWERER))
        fields["approver"] = (
            str,
            Field(pattern=rf"^\s*({allowed})\s*$", description=f"One of: {', '.join(approvers)}"),
        )
    else:
        fields["approver"] = (str, Field(pattern=r"\S", description="Who approves (must not be blank)"))
    config = None
    if signed_for is not None:
        fields["signature"] = (
            str,
            Field(default="", pattern=SIGNATURE_PATTERN, description=signature_help(signed_for)),
        )
        config = ConfigDict(json_schema_extra=_signature_required)
    return create_model(  # type: ignore[call-overload, no-any-return]
        "Approval", __base__=Approval, __config__=config, **fields
    )


def _signature_required(schema: dict[str, Any]) -> None:
    """Every answer needs a signature except a rollback's rejection, which may go without one."""
    rollback = {"properties": {"approver": {"pattern": rf"^\s*{ROLLBACK_ANSWERER}\s*$"}}, "required": ["approver"]}
    schema["if"] = rollback
    schema["then"] = {"properties": {"decision": {"const": "reject"}}, "required": ["decision"]}
    schema["else"] = {"required": ["signature"]}


def signature_help(challenge: Challenge) -> str:
    """The exact question and the command that signs an answer to it."""
    return (
        f"Required: sign step {challenge.step!r} of {challenge.migration!r} at epoch {challenge.epoch}, "
        f"attempt {challenge.attempt}, then paste the output here: `{challenge.sign_command()}` "
        "(NAME: the approver above; add --reject to reject)"
    )


def auto_approval(step: str, actor: str, permission: str) -> ApprovalRecord:
    """The record of an approval the run gave itself (``auto_approve``), marked automatic, with who
    ran it, where, and what allowed it."""
    who = f"auto-approve ({actor} on {socket.gethostname()})"
    return ApprovalRecord(
        step=step, approver=who, reason=f"auto_approve set for this run; {permission}", automatic=True
    )


def require_auto_permission(spec: Any, auto_approve: bool) -> str | None:
    """At the run's edge: ``ApprovalError`` when a run asks to answer approvals itself but the spec
    names approvers without ``approvals.auto`` (a run parameter cannot waive them)."""
    if not auto_approve:
        return None
    permission: str | None = spec.approvals.auto_permission()
    if permission is None:
        raise ApprovalError(
            f"auto_approve refused for {spec.name!r}: the spec names approvers "
            f"({', '.join(spec.approvals.approvers)}); only `approvals.auto: true` in the spec lets a run "
            "answer them itself. Nothing was run"
        )
    return permission


def pause_key(step: str, epoch: int, attempt: int = 0) -> str:
    """The pause's key (lowercase letters, digits and dashes): one per step, epoch and attempt, so an
    answer stored for an older state, or one already refused, is never found by a newer pause."""
    return artifact_key("approve", step, f"e{epoch}", f"a{attempt}")


def obtain_approval(ctx: StagedRun, step: str, summary: str) -> ApprovalRecord:
    """Pause the calling flow run until a valid approval of ``step`` arrives; count it against the lease.

    ``ctx`` is the run's context, of any kind of migration (a table move, a schema change, a route
    move: ``shiftover.flows.context.StagedRun``). Must be called from a flow (never a task).
    An answer the server let through but ``check_approval`` refuses (an approver off the list, say, or,
    when the spec lists keys, an answer whose signature is missing or does not verify for this
    request and decision) is recorded and the question asked again; a rejection or a time-out raises
    ``ApprovalError`` and the migration stays in its last safe phase; an answer to a stale request
    raises ``StaleApprovalError``.
    """
    store, name = ctx.migration.store, ctx.migration.name
    permission = require_auto_permission(ctx.migration.spec, ctx.options.auto_approve)
    if permission is not None:
        record = auto_approval(step, ctx.actor, permission)
        store.audit(name, record.approver, "approval", record.as_detail())
        return record
    from prefect.artifacts import create_markdown_artifact

    lease = ctx.lease
    if lease is None:
        raise ApprovalError(f"{step!r} of {name!r} needs an approval, which counts only against the run's lease")
    request = open_request(store.engine, name, step, lease, ctx.holder)
    if request.new:  # a suspended run resumed asks again and finds its request: the artifact is there
        create_markdown_artifact(
            key=artifact_key(name, "approve", step), markdown=summary, description=f"approval requested: {step}"
        )
    approvers, keys = ctx.migration.spec.approvals.approvers, ctx.migration.spec.approvals.public_keys
    announce(name, step, approvers, signed=keys is not None)
    asking = summary
    while True:
        answer = wait_for_answer(ctx, request, asking)
        require_pending(store.engine, request)
        try:
            record = check_approval(answer, name, approvers, step, keys=keys, request=request)
        except ApprovalError as exc:
            who = answer.approver.strip() or "(empty)"
            if isinstance(exc, SignatureError):  # a claim, not a proven name: neither approve nor reject
                who = f"{who} (unverified)"
            elif answer.decision == "reject":
                close_request(store.engine, request, REFUSED, who, str(exc))
                raise
            request = refuse_answer(store.engine, request, who, str(exc))  # asked again, under a new key
            get_run_logger().warning("%s; asking again", exc)
            asking = refused_again(str(exc), summary)
            continue
        accept_request(store.engine, request, record, lease)
        return record


def refused_again(why: str, summary: str) -> str:
    """The form's text when a question is asked again: why the last answer was refused, first, as the
    sentence the flow wrote (the server's own refusals quote the schema; these are the flow's)."""
    return f"**Your last answer was refused:** {why}. Nothing was changed; answer again below.\n\n{summary}"


def wait_for_answer(ctx: StagedRun, request: Any, summary: str) -> Approval:
    """One pause (or suspension, for deployed runs) for the request's current attempt."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run, suspend_flow_run

    spec = ctx.migration.spec
    timeout = int(ctx.options.approval_timeout_seconds or spec.approvals.timeout_seconds)
    challenge = challenge_of(request) if spec.approvals.public_keys is not None else None
    if challenge is not None:
        summary = f"{summary}\n\n{signature_help(challenge)}"
    form = approval_form(spec.name, spec.approvals.approvers, challenge).with_initial_data(description=summary)
    key = pause_key(request.step, request.epoch, request.attempt)
    try:
        if ctx.options.suspend if ctx.options.suspend is not None else suspendable_run():
            answer: Approval = suspend_flow_run(wait_for_input=form, timeout=timeout, key=key)
        else:
            answer = pause_flow_run(
                wait_for_input=form, timeout=timeout, poll_interval=ctx.options.poll_interval_seconds, key=key
            )
    except FlowPauseTimeout:
        close_request(ctx.migration.store.engine, request, TIMED_OUT, "shiftover", f"no answer within {timeout}s")
        raise ApprovalError(f"no approval for {request.step!r} within {timeout}s; nothing was changed") from None
    return answer


def announce(migration: str, step: str, approvers: tuple[str, ...], signed: bool = False) -> None:
    """Say where the run waits and how to answer: the run id, its page in the UI, the CLI command
    (which signs the answer with the approver's key when the spec lists keys)."""
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_UI_URL

    run_id = flow_run.get_id()
    ui = PREFECT_UI_URL.value()
    who = "|".join(approvers) or "NAME"
    get_run_logger().warning(
        "waiting for approval of %s (%s): flow run %s%s; from a terminal: "
        "shiftover approve %s --approver %s --confirm-name %s --reason '...'%s",
        step,
        migration,
        run_id,
        f", {ui}/runs/flow-run/{run_id}" if ui else "",
        run_id,
        who,
        migration,
        " --control-url URL [--key FILE] (signed: the spec lists approvers' keys)" if signed else "",
    )


def suspendable_run() -> bool:
    """True for a top-level flow run started from a deployment (only those can be suspended)."""
    from prefect.context import FlowRunContext

    run_ctx = FlowRunContext.get()
    run = run_ctx.flow_run if run_ctx is not None else None
    return run is not None and run.deployment_id is not None and run.parent_task_run_id is None
