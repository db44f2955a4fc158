"""Approvals before irreversible steps, bound to the state they approve.

Each request is recorded with the step and the migration's epoch at the time it was asked. An
answer counts only while its request is still pending, the migration is still at that epoch and
the asking run still holds the lease, all checked in one transaction with the acceptance; a
rollback cancels every pending request. So an answer given before a rollback (or for another
run) can never move the migration. When the spec lists approvers' keys, an answer counts only with
the named approver's signature of that request and decision (``shiftover.signing``). The form
itself (a Prefect ``RunInput``) lives with the flows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from shiftover.control import schema
from shiftover.control.store import Fence, _audit, utcnow
from shiftover.errors import ApprovalError, LeaseLostError, SignatureError, StaleApprovalError
from shiftover.signing import Challenge, verify_approval

PENDING, APPROVED, REFUSED, CANCELLED, TIMED_OUT = "pending", "approved", "refused", "cancelled", "timed_out"
# The name a rollback answers a pending pause with (always a rejection): the form accepts it so the
# server lets the paused run wake; the run then finds its request cancelled and stops. Never an approver.
ROLLBACK_ANSWERER = "rollback"
_r = schema.approval_requests


class Answer(Protocol):
    """What an approver submitted (the flows' form, or any object with these fields)."""

    approver: str
    confirm_name: str
    reason: str

    @property
    def decision(self) -> str: ...


@dataclass(frozen=True)
class ApprovalRecord:
    step: str
    approver: str
    reason: str
    automatic: bool
    key_fingerprint: str | None = None  # set when the answer's signature was verified

    def as_detail(self) -> dict[str, Any]:
        detail = {"step": self.step, "approver": self.approver, "reason": self.reason, "automatic": self.automatic}
        if self.key_fingerprint is not None:  # the reason is not signed, only recorded
            detail |= {"signature_verified": True, "key_fingerprint": self.key_fingerprint}
        return detail


@dataclass(frozen=True)
class ApprovalRequest:
    id: int
    migration: str
    step: str
    epoch: int
    holder: str
    state: str
    attempt: int = 0  # answers refused so far; each new question has its own pause key
    new: bool = field(default=False, compare=False)  # opened by this call, not found pending


def check_approval(
    answer: Answer,
    migration: str,
    approvers: tuple[str, ...],
    step: str,
    keys: Mapping[str, str] | None = None,
    request: ApprovalRequest | None = None,
) -> ApprovalRecord:
    """Re-check a submitted form (whitespace trimmed); raises ``ApprovalError`` naming what is wrong.

    With ``keys`` (the spec's ``approvals.keys``) the answer must also carry the named approver's
    signature of this ``request`` (its migration, step, epoch, attempt) and its decision, else
    ``SignatureError``. Only a rollback's rejection goes unsigned: a rejection can only stop a run."""
    approver, reason, confirm = answer.approver.strip(), answer.reason.strip(), answer.confirm_name.strip()
    fingerprint = None
    if keys is not None and not (approver == ROLLBACK_ANSWERER and answer.decision == "reject"):
        if request is None:
            raise ValueError("a signed approval is checked against its request")
        fingerprint = verify_answer(answer, keys, request)
    if answer.decision == "reject":
        signed = f" (signature verified, key {fingerprint})" if fingerprint else ""
        raise ApprovalError(
            f"{step!r} rejected by {approver or 'an empty approver'}{signed}: {reason or 'no reason given'}"
        )
    if not approver:
        raise ApprovalError(f"approval of {step!r} refused: the approver is empty")
    if approver == ROLLBACK_ANSWERER:
        raise ApprovalError(f"approval of {step!r} refused: {ROLLBACK_ANSWERER!r} is reserved for rollbacks")
    if approvers and approver not in approvers:
        raise ApprovalError(
            f"approval of {step!r} refused: {approver!r} is not an allowed approver ({', '.join(approvers)})"
        )
    if confirm != migration:
        raise ApprovalError(
            f"approval of {step!r} refused: confirmation {confirm!r} is not the migration's name {migration!r}"
        )
    return ApprovalRecord(step=step, approver=approver, reason=reason, automatic=False, key_fingerprint=fingerprint)


def verify_answer(answer: Answer, keys: Mapping[str, str], request: ApprovalRequest) -> str:
    """The fingerprint of the key that signed ``answer`` for ``request``; ``SignatureError`` when the
    answer is unsigned, names an approver without a key, or its signature does not verify."""
    approver = answer.approver.strip()
    public = keys.get(approver)
    if public is None:
        raise SignatureError(approver, f"no key in the spec for {approver!r} (keys: {', '.join(keys)})")
    signature = (getattr(answer, "signature", None) or "").strip()
    if not signature:
        raise SignatureError(
            approver, f"the answer is unsigned; sign it with: {challenge_of(request).sign_command(approver)}"
        )
    return verify_approval(public, signature, challenge_of(request), answer.decision, approver)


def challenge_of(request: ApprovalRequest) -> Challenge:
    """What a signature for ``request`` must cover."""
    return Challenge(request.migration, request.step, request.epoch, request.attempt)


def open_request(engine: Engine, migration: str, step: str, lease: Fence, holder: str) -> ApprovalRequest:
    """The pending request for ``step`` at the lease's epoch by ``holder`` (a suspended run that
    resumes asks again and finds it), or a new one."""
    with engine.begin() as conn:
        lease.check(conn)
        row = conn.execute(
            sa.select(_r)
            .where(
                _r.c.migration == migration,
                _r.c.step == step,
                _r.c.epoch == lease.epoch,
                _r.c.holder == holder,
                _r.c.state == PENDING,
            )
            .order_by(_r.c.id.desc())
        ).first()
        if row is not None:
            return _request(row)
        inserted = conn.execute(
            _r.insert().values(
                migration=migration, step=step, epoch=lease.epoch, holder=holder, state=PENDING, requested_at=utcnow()
            )
        ).inserted_primary_key
        new_id = int(inserted[0]) if inserted else 0
        _audit(conn, migration, holder, "approval_requested", {"step": step, "epoch": lease.epoch, "request": new_id})
    return ApprovalRequest(new_id, migration, step, lease.epoch, holder, PENDING, new=True)


def require_pending(engine: Engine, request: ApprovalRequest) -> None:
    """``StaleApprovalError`` when the request is no longer pending (a rollback cancelled it)."""
    with engine.connect() as conn:
        state = conn.execute(sa.select(_r.c.state).where(_r.c.id == request.id)).scalar()
    if state != PENDING:
        raise StaleApprovalError(
            f"the approval of {request.step!r} is no longer wanted: its request was {state} "
            "(a rollback cancels pending approvals); nothing was changed"
        )


def accept_request(engine: Engine, request: ApprovalRequest, record: ApprovalRecord, lease: Fence) -> None:
    """Count the answer: only while the request is pending, at its epoch, and the lease holds."""
    with engine.begin() as conn:
        state = conn.execute(sa.select(_r.c.state).where(_r.c.id == request.id)).scalar()
        if state != PENDING:
            raise StaleApprovalError(
                f"the approval of {request.step!r} answered by {record.approver} came after the request was "
                f"{state} (a rollback cancels pending approvals); nothing was changed"
            )
        if lease.epoch != request.epoch:
            raise StaleApprovalError(
                f"the approval of {request.step!r} was asked at epoch {request.epoch}, but this run is at "
                f"epoch {lease.epoch}; nothing was changed"
            )
        try:
            lease.check(conn)
        except LeaseLostError as exc:
            raise StaleApprovalError(
                f"the approval of {request.step!r} by {record.approver} is for a state that no longer holds: {exc}"
            ) from None
        _answer(conn, request.id, APPROVED, record.approver)
        _audit(conn, request.migration, record.approver, "approval", {**record.as_detail(), "epoch": request.epoch})


def close_request(engine: Engine, request: ApprovalRequest, state: str, who: str, why: str) -> None:
    """A refused or timed-out request: closed, audited; the migration stays where it is."""
    with engine.begin() as conn:
        _answer(conn, request.id, state, who)
        action = "approval_timed_out" if state == TIMED_OUT else "approval_refused"
        _audit(conn, request.migration, who, action, {"step": request.step, "epoch": request.epoch, "why": why})


def refuse_answer(engine: Engine, request: ApprovalRequest, who: str, why: str) -> ApprovalRequest:
    """An answer that fails the checks: audited, and the request stays pending for a next answer."""
    attempt = request.attempt + 1
    with engine.begin() as conn:
        conn.execute(
            _r.update().where(_r.c.id == request.id, _r.c.state == PENDING).values(detail={"attempt": attempt})
        )
        detail = {"step": request.step, "epoch": request.epoch, "why": why, "attempt": request.attempt}
        _audit(conn, request.migration, who, "approval_refused", detail)
    return replace(request, attempt=attempt)


def cancel_pending(conn: Connection, migration: str, who: str) -> list[ApprovalRequest]:
    """Inside a rollback's transaction: every pending request of ``migration`` is cancelled."""
    rows = conn.execute(sa.select(_r).where(_r.c.migration == migration, _r.c.state == PENDING)).all()
    if rows:
        conn.execute(
            _r.update()
            .where(_r.c.id.in_([r.id for r in rows]))
            .values(state=CANCELLED, answered_at=utcnow(), answered_by=who[:200])
        )
    return [_request(r) for r in rows]


def pending_requests(engine: Engine, migration: str | None = None) -> list[ApprovalRequest]:
    query = sa.select(_r).where(_r.c.state == PENDING).order_by(_r.c.id)
    if migration is not None:
        query = query.where(_r.c.migration == migration)
    with engine.connect() as conn:
        return [_request(r) for r in conn.execute(query)]


def pending_request_of(engine: Engine, holder: str) -> ApprovalRequest | None:
    """The request a run (``flow-run/<id>``) is waiting on, if any: what its answer must sign."""
    query = sa.select(_r).where(_r.c.holder == holder, _r.c.state == PENDING).order_by(_r.c.id.desc())
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else _request(row)


def _answer(conn: Connection, request_id: int, state: str, who: str) -> None:
    """Close a request that is still pending (a cancelled one stays cancelled)."""
    conn.execute(
        _r.update()
        .where(_r.c.id == request_id, _r.c.state == PENDING)
        .values(state=state, answered_at=utcnow(), answered_by=who[:200])
    )


def _request(row: Any) -> ApprovalRequest:
    attempt = int((row.detail or {}).get("attempt", 0))
    return ApprovalRequest(int(row.id), row.migration, row.step, int(row.epoch), row.holder, row.state, attempt)
