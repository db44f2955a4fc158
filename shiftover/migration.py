"""A migration opened for work: its spec resolved against live databases, with engines and
the control store. Flows build one at their edge and pass it (or its parts) down."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from shiftover.connect import get_engine, redact
from shiftover.control.store import ControlStore, open_store, store_knowing
from shiftover.errors import UnknownMigrationError
from shiftover.mapping import TableMapping
from shiftover.phases import Phase, is_at_least
from shiftover.preflight import resolve_mapping
from shiftover.spec import MigrationSpec, load_spec, stored_form


@dataclass(frozen=True)
class Migration:
    spec: MigrationSpec
    mapping: TableMapping
    source: Engine
    target: Engine
    store: ControlStore

    @property
    def name(self) -> str:
        return self.spec.name


def open_migration(
    spec: MigrationSpec, control_url: str, *, require_target: bool = True, register: bool = True, needed_by: str = ""
) -> Migration:
    """Check the spec against its databases, open the control store and register the migration.

    ``register=False`` is for what only serves a migration already under way (a worker, the drain,
    capture; ``needed_by`` names it in the error: "the 'capture-remove' flow"): a migration the store
    does not know raises ``UnknownMigrationError`` before anything is written (no row, no audit
    entry, no store created), and a known one is opened as it is (its stored spec is not refreshed)."""
    if register:
        mapping = resolve_mapping(spec, require_target=require_target)
        store = open_store(control_url)
        store.register(spec.name, stored_form(spec))
    else:
        store = started_store(spec, control_url, needed_by or "this caller")
        mapping = resolve_mapping(spec, require_target=require_target)
    return Migration(
        spec=spec,
        mapping=mapping,
        source=get_engine(spec.source.url),
        target=get_engine(spec.target.url),
        store=store,
    )


def load_migration(
    spec_path: str, control_url: str, *, require_target: bool = True, register: bool = True, needed_by: str = ""
) -> Migration:
    """``open_migration`` for a spec file: what every flow calls at its edge (``register=False`` in
    flows that serve a started migration and must not start one)."""
    spec = load_spec(spec_path)
    return open_migration(spec, control_url, require_target=require_target, register=register, needed_by=needed_by)


def started_store(spec: MigrationSpec, control_url: str, needed_by: str) -> ControlStore:
    """The control store at ``control_url`` when it knows ``spec``'s migration; else
    ``UnknownMigrationError`` naming the migration, the store (no password) and what starts it.
    Nothing is created: not a SQLite file, not a schema, not a row."""
    store = store_knowing(control_url, spec.name)
    if store is None:
        raise UnknownMigrationError(spec.name, redact(control_url), needed_by, what_starts(spec))
    return store


def what_starts(spec: MigrationSpec) -> str:
    """How an operator starts ``spec``'s migration (its plan's first stage registers it)."""
    from shiftover.plan import build_plan

    first = build_plan(spec).stages[0]
    return (
        f"Start it with `shiftover run SPEC` (the 'migrate' flow), or its first stage alone with "
        f"`shiftover run SPEC --stop-after {first.name}` (the '{first.flow}' flow): that registers it"
    )


def resume_migration(spec: MigrationSpec, store: ControlStore, phase: Phase) -> Migration:
    """The migration opened for a run that finds it at ``phase`` (registered already).

    Once archived, the old table is checked under its archive name (its own name no longer
    exists) while the spec stays as declared; before dual-write with ``backfill.create_target``
    the new table may not exist yet (the dual-write stage creates it)."""
    checked = spec
    if is_at_least(phase, Phase.ARCHIVED):
        archive = f"{spec.source.table}{spec.archive.suffix}"
        checked = spec.model_copy(update={"source": spec.source.model_copy(update={"table": archive})})
    require_target = not (spec.backfill.create_target and not is_at_least(phase, Phase.DUAL_WRITING))
    return Migration(
        spec=spec,
        mapping=resolve_mapping(checked, require_target=require_target),
        source=get_engine(spec.source.url),
        target=get_engine(spec.target.url),
        store=store,
    )
