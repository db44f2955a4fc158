"""A migration opened for work: its spec resolved against live databases, with engines and
the control store. Flows build one at their edge and pass it (or its parts) down."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from shiftover.connect import get_engine
from shiftover.control.store import ControlStore, open_store
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


def open_migration(spec: MigrationSpec, control_url: str, *, require_target: bool = True) -> Migration:
    """Check the spec against its databases, open the control store and register the migration."""
    mapping = resolve_mapping(spec, require_target=require_target)
    store = open_store(control_url)
    store.register(spec.name, stored_form(spec))
    return Migration(
        spec=spec,
        mapping=mapping,
        source=get_engine(spec.source.url),
        target=get_engine(spec.target.url),
        store=store,
    )


def load_migration(spec_path: str, control_url: str, *, require_target: bool = True) -> Migration:
    """``open_migration`` for a spec file: what every flow calls at its edge."""
    return open_migration(load_spec(spec_path), control_url, require_target=require_target)


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
