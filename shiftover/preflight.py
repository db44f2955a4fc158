"""Check a spec against the live databases before anything is written.

Every problem becomes a ``SpecError`` naming the spec field: an unreachable database
(password never shown), an unknown table or column, a key that is not a primary or
unique key, a key column missing from the target.
"""

from __future__ import annotations

import sqlalchemy as sa

from shiftover.connect import get_engine, redact
from shiftover.engines import dialect_for
from shiftover.errors import CredentialError, SpecError
from shiftover.mapping import ColumnMap, TableMapping
from shiftover.spec import Endpoint, MigrationSpec


def resolve_mapping(spec: MigrationSpec, *, require_target: bool = True) -> TableMapping:
    """The spec's ``TableMapping``, checked against both databases."""
    inspector = inspect_endpoint(spec.source, "source")
    source_cols = table_columns(inspector, spec.source, "source")
    columns = _mapped_columns(spec, source_cols)
    check_unique_key(inspector, spec.source, spec.key, "key")
    mapping = TableMapping(
        source_table=spec.source.table,
        target_table=spec.target.table,
        source_schema=spec.source.schema_name,
        target_schema=spec.target.schema_name,
        key=spec.key,
        columns=columns,
        transform=spec.load_transform(),
    )
    if require_target:
        refuse_same_table(spec)
        check_target(spec, mapping)
    return mapping


def target_exists(spec: MigrationSpec) -> bool:
    """Whether the new table is there yet (``SpecError`` when its database cannot be reached)."""
    inspector = inspect_endpoint(spec.target, "target")
    return bool(inspector.has_table(spec.target.table, schema=spec.target.schema_name))


def will_create_target(spec: MigrationSpec) -> bool:
    """True when the run will create the new table (``backfill.create_target`` and it is absent)."""
    return spec.backfill.create_target and not target_exists(spec)


def refuse_same_table(spec: MigrationSpec) -> None:
    """``SpecError`` when source and target are one table under two spellings (host names, drivers,
    ``orders`` and ``public.orders``, a path and a link to it): asked of the servers themselves, so
    no spelling can hide it. A run would otherwise archive and drop the only copy."""
    import uuid

    from shiftover.engines import dialect_for

    source, target = get_engine(spec.source.url), get_engine(spec.target.url)
    engine = dialect_for(source)
    if engine is not dialect_for(target):
        return
    with source.connect() as a, target.connect() as b:
        src_id = engine.table_identity(a, spec.source.schema_name, spec.source.table)
        same = src_id is not None and src_id == engine.table_identity(b, spec.target.schema_name, spec.target.table)
        if same and engine.same_server(a, b, uuid.uuid4().hex):
            raise SpecError(
                "target",
                f"source {spec.source.table!r} ({redact(spec.source.url)}) and target {spec.target.table!r} "
                f"({redact(spec.target.url)}) are the same table on the same server; migrating it onto itself "
                "would archive and drop its only copy. Point the target at another table or database",
            )


def check_target(spec: MigrationSpec, mapping: TableMapping) -> None:
    """The target table exists, holds every mapped column, and has the key as a unique key."""
    inspector = inspect_endpoint(spec.target, "target")
    target_cols = table_columns(inspector, spec.target, "target")
    missing = [c for c in mapping.target_columns if c not in target_cols]
    key_missing = [k for k in mapping.target_key if k in missing]
    if key_missing:
        raise SpecError("key", f"key column(s) {key_missing} missing from target table {spec.target.table!r}")
    if missing:
        raise SpecError("columns", f"column(s) {missing} missing from target table {spec.target.table!r}")
    check_unique_key(inspector, spec.target, mapping.target_key, "target.table")


def _mapped_columns(spec: MigrationSpec, source_cols: list[str]) -> tuple[ColumnMap, ...]:
    for key_col in spec.key:
        if key_col not in source_cols:
            raise SpecError("key", f"key column {key_col!r} not in source table {spec.source.table!r}")
    if not spec.columns:
        return tuple(ColumnMap(source=c, target=c) for c in source_cols)
    mapped = []
    for i, col in enumerate(spec.columns):
        if col.sql is None and col.name not in source_cols:
            raise SpecError(
                f"columns.{i}.name",
                f"unknown column {col.name!r} in source table {spec.source.table!r} (has: {', '.join(source_cols)})",
            )
        mapped.append(ColumnMap(source=col.name, target=col.target_name, sql=col.sql))
    return tuple(mapped)


def table_columns(inspector: sa.Inspector, endpoint: Endpoint, field: str) -> list[str]:
    if not inspector.has_table(endpoint.table, schema=endpoint.schema_name):
        raise SpecError(f"{field}.table", f"no table {endpoint.table!r} in {redact(endpoint.url)}")
    named = dialect_for(inspector.dialect).reflected_name
    return [named(c["name"]) for c in inspector.get_columns(endpoint.table, schema=endpoint.schema_name)]


def check_unique_key(inspector: sa.Inspector, endpoint: Endpoint, key: tuple[str, ...], field: str) -> None:
    pk = inspector.get_pk_constraint(endpoint.table, schema=endpoint.schema_name)
    candidates = [tuple(pk.get("constrained_columns") or ())]
    candidates += [
        tuple(u["column_names"]) for u in inspector.get_unique_constraints(endpoint.table, schema=endpoint.schema_name)
    ]
    candidates += [
        tuple(c for c in ix["column_names"] if c is not None)
        for ix in inspector.get_indexes(endpoint.table, schema=endpoint.schema_name)
        if ix.get("unique")
    ]
    if not any(set(c) == set(key) and c for c in candidates):
        found = [list(c) for c in candidates if c]
        raise SpecError(
            field,
            f"table {endpoint.table!r} has no primary or unique key on {list(key)} "
            f"(its keys: {found or 'none'}); add one or declare the key that exists",
        )


def inspect_endpoint(endpoint: Endpoint, side: str) -> sa.Inspector:
    """An inspector on a reachable database, or a ``SpecError`` on ``<side>.url`` (password hidden)."""
    field = f"{side}.url"
    try:
        engine = get_engine(endpoint.url)
        with engine.connect():
            pass
        return sa.inspect(engine)
    except CredentialError as exc:
        raise SpecError(field, str(exc)) from None
    except sa.exc.ArgumentError as exc:
        raise SpecError(field, f"not a database URL: {exc}") from None
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        reason = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
        raise SpecError(field, f"cannot reach {redact(endpoint.url)}: {reason}") from None
    except ModuleNotFoundError as exc:
        raise SpecError(field, f"no driver for {redact(endpoint.url)}: {exc}") from None
