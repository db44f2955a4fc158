"""A schema change opened for work: its spec, its table's engine and the control store."""

from __future__ import annotations

from dataclasses import dataclass

from shiftover.connect import get_engine
from shiftover.control.store import ControlStore
from shiftover.schema.columns import Target
from shiftover.schema.spec import ExpandContractSpec


@dataclass(frozen=True)
class SchemaChange:
    spec: ExpandContractSpec
    target: Target
    store: ControlStore

    @property
    def name(self) -> str:
        return self.spec.name


def open_schema_change(spec: ExpandContractSpec, store: ControlStore) -> SchemaChange:
    return SchemaChange(spec, Target.of(get_engine(spec.database.url), spec), store)
