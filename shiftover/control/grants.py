"""Least privilege on the control store: what an application may do there, and what it may not.

Applications (the flag client, the dual-writer, shadow reads) hold credentials to the control
store on every instance. They need to read flags (and the schema revision, to refuse an old
store), and to append to the reconciliation queue, the metrics and the shadow mismatches; nothing
else. In particular they must not read ``so_migrations`` (the specs), change a flag, answer an
approval or write the audit log. The orchestrator (flows, the CLI) owns every table.
"""

from __future__ import annotations

from shiftover.control import schema
from shiftover.control.store import VERSION_TABLE

# What an application reads, and the tables it only appends to.
APP_READS = (schema.flags.name, VERSION_TABLE)
APP_APPENDS = (schema.reconcile_queue.name, schema.metrics.name, schema.shadow_mismatches.name)


def _tables() -> list[str]:
    return [*sorted(t.name for t in schema.metadata.sorted_tables), VERSION_TABLE]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def postgresql_grants(app_role: str, orchestrator_role: str, schema_name: str = "public") -> list[str]:
    """GRANT statements for a PostgreSQL control store (roles must exist; run as the tables' owner)."""
    app, orch, ns = _quote(app_role), _quote(orchestrator_role), _quote(schema_name)
    q = lambda t: f"{ns}.{_quote(t)}"  # noqa: E731
    appended = ", ".join(q(t) for t in APP_APPENDS)
    return [
        f"GRANT USAGE ON SCHEMA {ns} TO {app}, {orch};",
        f"GRANT SELECT ON {', '.join(q(t) for t in APP_READS)} TO {app};",
        f"GRANT INSERT ON {appended} TO {app};",
        # inserts come back with their new ids (INSERT ... RETURNING id): the id column, no data
        *(f"GRANT SELECT (id) ON {q(t)} TO {app};" for t in APP_APPENDS),
        # the appended tables' ids come from their sequences
        *(f"GRANT USAGE ON SEQUENCE {ns}.{_quote(t + '_id_seq')} TO {app};" for t in APP_APPENDS),
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(q(t) for t in _tables())} TO {orch};",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {ns} TO {orch};",
    ]


def mysql_grants(app_user: str, orchestrator_user: str, database: str, host: str = "%") -> list[str]:
    """GRANT statements for a MySQL/MariaDB control store (users must exist)."""
    app, orch = f"'{app_user}'@'{host}'", f"'{orchestrator_user}'@'{host}'"
    db = f"`{database.replace('`', '``')}`"
    return [
        *(f"GRANT SELECT ON {db}.`{t}` TO {app};" for t in APP_READS),
        *(f"GRANT INSERT, SELECT (id) ON {db}.`{t}` TO {app};" for t in APP_APPENDS),
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {db}.* TO {orch};",
    ]


def explain_grants(
    app_role: str = "shiftover_app", orchestrator_role: str = "shiftover", database: str = "shiftover"
) -> str:
    """Both engines' GRANTs, as ``shiftover plan --ddl`` prints them."""
    lines = [
        "-- control store: least privilege (applications read flags and append to the queue, metrics",
        "-- and shadow mismatches; the orchestrator owns the rest). Schema changes stay with",
        "-- `shiftover control upgrade`, run as the tables' owner. A SQLite store has only file permissions.",
        "-- PostgreSQL:",
        *postgresql_grants(app_role, orchestrator_role),
        "-- MySQL/MariaDB:",
        *mysql_grants(app_role, orchestrator_role, database),
    ]
    return "\n".join(lines)
