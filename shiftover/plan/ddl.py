"""The DDL Shiftover would run for a spec, as text (``shiftover plan --ddl``)."""

from __future__ import annotations

from shiftover.spec import MigrationSpec


def explain_ddl(spec: MigrationSpec) -> str:
    """The DDL Shiftover would run for ``spec``, as text: the target table (when it would be
    created from the source schema) and the change-capture triggers. Reads schemas, writes nothing."""
    from shiftover.capture.changelog import capture_ddl
    from shiftover.connect import get_engine
    from shiftover.preflight import resolve_mapping

    parts = []
    if spec.backfill.create_target:
        from shiftover.backfill.typemap import target_ddl

        mapping = resolve_mapping(spec, require_target=False)
        parts += [
            "-- target table (backfill.create_target: created before dual-write if absent)",
            target_ddl(get_engine(spec.source.url), get_engine(spec.target.url), mapping) + ";",
        ]
    parts += [
        "-- trigger capture on the old table (for applications that cannot use the dual-writer)",
        capture_ddl(spec),
    ]
    return "\n".join(parts)
