"""The control store: where a migration's phase, audit log and progress live.

A SQLite file by default, PostgreSQL (or MySQL) by URL. Its schema is versioned by the
Alembic revisions beside this module; ``open_store`` upgrades it to head on first use.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

from shiftover.connect import get_engine, redact
from shiftover.control import schema
from shiftover.credentials import is_reference
from shiftover.engines import dialect_for, find_dialect
from shiftover.errors import ControlStoreError, LeaseError, PhaseError
from shiftover.phases import Phase, allowed_next

DEFAULT_URL = "sqlite:///.shiftover/control.db"
_UPGRADE_LOCK = threading.Lock()  # Alembic's migration context is process-global
UPGRADE_LOCK = "shiftover-control-store-upgrade"  # the server-wide one, across processes


def absolute_url(url: str) -> str:
    """``url`` with a relative SQLite path made absolute against the working directory, so the
    CLI, the deployments and the operator all name the same file (and see which one)."""
    from shiftover.engines import dialect_for

    parsed = sa.make_url(url)
    return dialect_for(parsed).absolute_url(parsed).render_as_string(hide_password=False)


REGISTERED = "registered"  # the reason of a migration's first audit entry
VERSION_TABLE = "so_alembic_version"
_MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(UTC)


def key_to_json(key: tuple[Any, ...] | list[Any]) -> str:
    """Canonical text of a row key, as stored in ``key_json`` columns."""
    return json.dumps(list(key), default=str, separators=(",", ":"))


def key_from_json(text: str) -> tuple[Any, ...]:
    return tuple(json.loads(text))


class Fence(Protocol):
    """What a fenced write checks inside its transaction (``control.lease.Lease``)."""

    epoch: int

    def check(self, conn: sa.Connection) -> None: ...


@dataclass(frozen=True)
class PhaseChange:
    at: datetime
    actor: str
    phase: str
    previous: str | None
    reason: str


@dataclass(frozen=True)
class Registration:
    """What ``enroll`` found: the migration's phase, and whether this call created it (its first run)."""

    phase: Phase
    created: bool


class ControlStore:
    """Phases and the audit log; domain modules use ``engine`` for their own tables."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def url(self) -> str:
        return redact(self.engine.url)

    # -- schema -------------------------------------------------------------------
    def upgrade(self) -> None:
        """Bring the control store's schema to the newest revision.

        Two first runs may meet an empty store at once. In one process they take turns (Alembic's
        ``context`` is one module-wide object); across processes a server's named lock
        (``EngineDialect.named_lock``) makes them take turns too, and the second finds the work done.
        On SQLite, where the whole upgrade is one transaction, the loser fails on a table the winner
        just created, then waits for the store to reach the newest revision and goes on."""
        with _UPGRADE_LOCK:
            try:
                with self.engine.connect() as locker, dialect_for(self.engine).named_lock(locker, UPGRADE_LOCK, 120):
                    if self.revision() == head_revision():
                        return
                    cfg = Config()
                    cfg.set_main_option("script_location", str(_MIGRATIONS_DIR))
                    with self.engine.begin() as conn:
                        cfg.attributes["connection"] = conn
                        command.upgrade(cfg, "head")
            except sa.exc.DBAPIError as exc:
                if self._reaches_head():
                    return
                if isinstance(exc, sa.exc.OperationalError):
                    raise ControlStoreError(f"control store {self.url} is unreachable: {exc.orig}") from None
                raise

    def _revision_after_upgrades(self) -> str | None:
        """The revision once no upgrade holds the store's upgrade lock (a server's: SQLite's upgrade is
        one transaction, so a reader never sees it half-way)."""
        with self.engine.connect() as locker, dialect_for(self.engine).named_lock(locker, UPGRADE_LOCK, 120):
            return self.revision()

    def _reaches_head(self, seconds: float = 30.0) -> bool:
        """Whether another process's upgrade brings the store to the newest revision within ``seconds``."""
        deadline, wanted = time.monotonic() + seconds, head_revision()
        while True:
            try:
                if self.revision() == wanted:
                    return True
            except ControlStoreError:
                return False
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def revision(self) -> str | None:
        """The schema revision the store is at; None when it holds no Shiftover schema yet."""
        from alembic.runtime.migration import MigrationContext

        try:
            with self.engine.connect() as conn:
                context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
                return context.get_current_revision()
        except sa.exc.OperationalError as exc:
            raise ControlStoreError(f"control store {self.url} is unreachable: {exc.orig}") from None

    def require_current(self, *, create: bool) -> None:
        """Refuse a store at an older (or newer) schema, naming the command that upgrades it. An
        empty store is created at the newest revision when ``create`` (the orchestrator's first run);
        an application (``create=False``) leaves it empty and keeps its safe default, old store only,
        until the orchestrator has created it."""
        found, wanted = self.revision(), head_revision()
        if found == wanted:
            return
        if create and found is not None:  # maybe another first run half-way through creating it (MariaDB)
            found = self._revision_after_upgrades()
            if found == wanted:
                return
        if found is None:
            if create:
                self.upgrade()
            return
        where = f"--control-url '{self.url}'"
        raise ControlStoreError(
            f"control store {self.url} is at schema revision {found}, this Shiftover needs {wanted}: "
            f"stop its flows, then run `shiftover control upgrade {where}` (applications never upgrade it)"
        )

    # -- migrations and phases ----------------------------------------------------
    def register(self, name: str, spec: dict[str, Any], actor: str = "shiftover") -> Phase:
        """Record a migration in ``planned`` (or keep its current phase and refresh its spec)."""
        return self.enroll(name, spec, actor).phase

    def enroll(self, name: str, spec: dict[str, Any], actor: str = "shiftover") -> Registration:
        """``register``, saying whether this call created the migration: only the run that did may
        remove it again when it is refused before its first stage (``forget_refused``)."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(schema.migrations.c.phase).where(schema.migrations.c.name == name)).first()
            now = utcnow()
            if row is not None:
                refreshed = conn.execute(
                    schema.migrations.update().where(schema.migrations.c.name == name).values(spec=spec, updated_at=now)
                )
                if refreshed.rowcount == 1:  # else a refused first run removed it meanwhile: created afresh
                    return Registration(Phase(row.phase), created=False)
            conn.execute(
                schema.migrations.insert().values(
                    name=name, phase=Phase.PLANNED, spec=spec, created_at=now, updated_at=now
                )
            )
            _audit(conn, name, actor, "phase", {"phase": Phase.PLANNED, "previous": None, "reason": REGISTERED})
        return Registration(Phase.PLANNED, created=True)

    def forget_refused(self, name: str, lease: Fence, *, evidence: Collection[str] = ()) -> bool:
        """Remove a migration whose first run was refused before it changed anything, in one
        transaction: bad input leaves the store as it was, not a ``planned`` name in ``status``.

        Only while ``lease`` (the refused run's) still holds at its epoch, so no other run has taken
        the migration since, and only when it is still ``planned`` with nothing in its audit log but
        the registration and ``evidence`` entries (what the refusal itself recorded, such as the
        rehearsal's findings). Any other entry (a table claim, a flag, a stage, a gate) is a change
        the store must keep. The caller passes only a migration its own run created
        (``Registration.created``): a re-run never removes what earlier runs recorded. True when removed."""
        with self.engine.begin() as conn:
            try:
                lease.check(conn)  # the row locked until the end: a fenced write of another run waits, then fails
            except (LeaseError, ControlStoreError):  # another run took it over, or the row is gone
                return False
            if _locked_phase(conn, name) is not Phase.PLANNED or not _only_registered(conn, name, evidence):
                return False
            conn.execute(schema.audit_log.delete().where(schema.audit_log.c.migration == name))
            conn.execute(schema.migrations.delete().where(schema.migrations.c.name == name))
        return True

    def has_migration(self, name: str) -> bool:
        with self.engine.connect() as conn:
            t = schema.migrations
            return conn.execute(sa.select(t.c.name).where(t.c.name == name)).first() is not None

    def phase(self, name: str) -> Phase:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(schema.migrations.c.phase).where(schema.migrations.c.name == name)).scalar()
        if value is None:
            raise ControlStoreError(f"no migration named {name!r} in control store {self.url}")
        return Phase(value)

    def transition(
        self, name: str, wanted: Phase, actor: str, reason: str = "", *, lease: Fence | None = None
    ) -> Phase:
        """Move ``name`` to ``wanted`` if the lifecycle allows it; audited, epoch bumped. With a
        ``lease``, only while that lease still holds (checked in the same transaction).
        Returns the old phase."""
        with self.engine.begin() as conn:
            if lease is not None:
                lease.check(conn)
            current = self._move(conn, name, wanted, actor, reason)
            if lease is not None:
                lease.epoch += 1
        return current

    def advance_to(self, name: str, wanted: Phase, actor: str, reason: str = "", *, lease: Fence | None = None) -> bool:
        """Transition unless already there (re-runs resume); True when a transition happened.

        Phases the lifecycle lets re-enter themselves (a canary step, a resumed backfill) are
        entered again, so each step stays in the audit log."""
        current = self.phase(name)
        if current == wanted and wanted not in allowed_next(current):
            return False
        self.transition(name, wanted, actor, reason, lease=lease)
        return True

    def complete_stage(
        self, name: str, stage: str, reaches: Phase, actor: str, reason: str, *, lease: Fence | None = None
    ) -> None:
        """Record ``stage`` as done and enter the phase it reaches, in one (fenced) transaction."""
        with self.engine.begin() as conn:
            if lease is not None:
                lease.check(conn)
            if _locked_phase(conn, name) != reaches:
                self._move(conn, name, reaches, actor, reason)
                if lease is not None:
                    lease.epoch += 1
            _audit(conn, name, actor, "stage", {"stage": stage, "phase": reaches, "reason": reason})

    def _move(self, conn: sa.Connection, name: str, wanted: Phase, actor: str, reason: str) -> Phase:
        current = _locked_phase(conn, name)
        if current is None:
            raise ControlStoreError(f"no migration named {name!r} in control store {self.url}")
        if wanted not in allowed_next(current):
            raise PhaseError(name, current, wanted, sorted(allowed_next(current)))
        t = schema.migrations
        conn.execute(t.update().where(t.c.name == name).values(phase=wanted, epoch=t.c.epoch + 1, updated_at=utcnow()))
        _audit(conn, name, actor, "phase", {"phase": wanted, "previous": current, "reason": reason})
        return current

    def history(self, name: str) -> list[PhaseChange]:
        rows = self.audit_entries(name, action="phase")
        return [
            PhaseChange(
                at=r["at"],
                actor=r["actor"],
                phase=r["detail"]["phase"],
                previous=r["detail"].get("previous"),
                reason=r["detail"].get("reason", ""),
            )
            for r in rows
        ]

    # -- audit --------------------------------------------------------------------
    def audit(self, name: str, actor: str, action: str, detail: dict[str, Any], *, lease: Fence | None = None) -> None:
        """Append an audit entry; with a ``lease``, only while it holds (checked in the same transaction)."""
        with self.engine.begin() as conn:
            if lease is not None:
                lease.check(conn)
            _audit(conn, name, actor, action, detail)

    def audit_entries(self, name: str, action: str | None = None) -> list[dict[str, Any]]:
        t = schema.audit_log
        query = sa.select(t).where(t.c.migration == name).order_by(t.c.id)
        if action:
            query = query.where(t.c.action == action)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def migrations(self) -> list[dict[str, Any]]:
        t = schema.migrations
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(t.c.name, t.c.phase, t.c.updated_at))]


def _locked_phase(conn: sa.Connection, name: str) -> Phase | None:
    # FOR UPDATE locks the row on PostgreSQL and MySQL; SQLite's compiler leaves it out (its writers
    # are serialised by the database lock instead).
    query = sa.select(schema.migrations.c.phase).where(schema.migrations.c.name == name).with_for_update()
    value = conn.execute(query).scalar()
    return Phase(value) if value is not None else None


def _only_registered(conn: sa.Connection, name: str, evidence: Collection[str]) -> bool:
    """Whether ``name``'s audit log holds its registration and only ``evidence`` besides, and no
    approval was ever asked for it."""
    a, r = schema.audit_log, schema.approval_requests
    entries = conn.execute(sa.select(a.c.action, a.c.detail).where(a.c.migration == name)).all()
    phases = [e.detail for e in entries if e.action == "phase"]
    others = [e.action for e in entries if e.action != "phase" and e.action not in evidence]
    asked = conn.execute(sa.select(r.c.id).where(r.c.migration == name).limit(1)).first()
    return len(phases) == 1 and phases[0].get("reason") == REGISTERED and not others and asked is None


def _audit(conn: sa.Connection, name: str, actor: str, action: str, detail: dict[str, Any]) -> None:
    conn.execute(
        schema.audit_log.insert().values(
            migration=name, at=utcnow(), actor=actor, action=action, detail=json.loads(json.dumps(detail, default=str))
        )
    )


def head_revision() -> str:
    """The newest schema revision this Shiftover ships."""
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def existing_store(url: str = DEFAULT_URL) -> ControlStore | None:
    """The control store at ``url`` when one exists there (checked as ``open_store`` does), else None,
    with nothing created: not a SQLite file, not a schema. For read-only commands (``check``)."""
    if not is_reference(url):
        parsed = sa.engine.make_url(url)
        dialect = find_dialect(parsed)
        if dialect is not None and not dialect.may_exist(parsed):
            return None
    store = ControlStore(get_engine(url))
    if store.revision() is None:
        return None
    store.require_current(create=False)
    return store


def store_knowing(url: str, migration: str) -> ControlStore | None:
    """``existing_store`` when it holds ``migration``, else None, with nothing created: for what only
    serves a migration already started (a worker, the drain, capture, ``shiftover throttle``)."""
    store = existing_store(url)
    return store if store is not None and store.has_migration(migration) else None


def open_store(url: str = DEFAULT_URL, *, create: bool = True) -> ControlStore:
    """The control store at ``url``, checked to be at the current schema (a few ms).

    A store with no schema yet is created when ``create`` (flows and the CLI); applications pass
    ``create=False``. A store at another revision is refused: ``shiftover control upgrade`` moves it."""
    store = ControlStore(get_engine(url))
    store.require_current(create=create)
    return store
