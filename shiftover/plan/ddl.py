"""The DDL Shiftover would run for a spec, as text (``shiftover plan --ddl``)."""

from __future__ import annotations

from shiftover.spec import MigrationSpec


def explain_ddl(spec: MigrationSpec) -> str:
    """The DDL Shiftover would run for ``spec``, as text: the target table (when it would be
    created from the source schema), the change-capture triggers and the control store's GRANTs.
    Reads schemas, writes nothing."""
    from shiftover.backfill.typemap import target_ddl
    from shiftover.capture.changelog import capture_ddl
    from shiftover.connect import get_engine
    from shiftover.preflight import resolve_mapping, target_exists

    mapping = resolve_mapping(spec, require_target=False)
    ddl = target_ddl(get_engine(spec.source.url), get_engine(spec.target.url), mapping) + ";"
    if not spec.backfill.create_target:
        head = "-- target table: NOT created by Shiftover (backfill.create_target is off); a table like this must exist"
    elif target_exists(spec):
        head = "-- target table: exists already, so nothing is created (backfill.create_target would create this)"
    else:
        head = "-- target table: created by the dual-write stage (backfill.create_target)"
    parts = [head, ddl]
    parts += [
        "-- trigger capture on the old table (for applications that cannot use the dual-writer)",
        capture_ddl(spec),
    ]
    from shiftover.control.grants import explain_grants

    parts.append(explain_grants())
    return "\n".join(parts)
