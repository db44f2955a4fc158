"""Trigger DDL per dialect: every insert, update and delete on the old table appends the row's
key to a changelog table (``so_changelog_<table>``) in the same transaction.

Only keys are recorded: the replay reads each key's current image from the old table, so the
changelog stays small and a replay of any suffix of it converges. An update that changes the
key logs the old key as a delete too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

_MAX_NAME = 60  # below PostgreSQL's 63 and MySQL's 64


@dataclass(frozen=True)
class CaptureNames:
    table: str  # the captured table
    changelog: str
    trigger: str  # PostgreSQL: one trigger (and a function of the same name); others: _ins/_upd/_del
    schema: str | None = None

    @classmethod
    def of(cls, table: str, schema: str | None = None) -> CaptureNames:
        return cls(table, f"so_changelog_{table}"[:_MAX_NAME], f"so_capture_{table}"[: _MAX_NAME - 4], schema)


def _q(dialect: sa.Dialect, name: str) -> str:
    return dialect.identifier_preparer.quote(name)


def _qt(dialect: sa.Dialect, name: str, schema: str | None) -> str:
    return f"{_q(dialect, schema)}.{_q(dialect, name)}" if schema else _q(dialect, name)


def install_ddl(dialect: sa.Dialect, names: CaptureNames, key: Sequence[str]) -> list[str]:
    """Statements that create the changelog table and the triggers (idempotent where the dialect allows)."""
    builder = {"postgresql": _postgresql, "mysql": _mysql, "mariadb": _mysql, "sqlite": _sqlite}.get(dialect.name)
    if builder is None:
        from shiftover.errors import CaptureError

        raise CaptureError(f"trigger capture does not support {dialect.name!r} (PostgreSQL, MySQL/MariaDB, SQLite do)")
    return builder(dialect, names, key)


def remove_ddl(dialect: sa.Dialect, names: CaptureNames, *, keep_changelog: bool = False) -> list[str]:
    """Statements that drop the triggers (and the changelog table unless kept)."""
    table = _qt(dialect, names.table, names.schema)
    log = _qt(dialect, names.changelog, names.schema)
    if dialect.name == "postgresql":
        stmts = [
            f"DROP TRIGGER IF EXISTS {_q(dialect, names.trigger)} ON {table}",
            f"DROP FUNCTION IF EXISTS {_qt(dialect, names.trigger, names.schema)}()",
        ]
    else:
        stmts = [
            f"DROP TRIGGER IF EXISTS {_qt(dialect, f'{names.trigger}_{s}', names.schema if dialect.name != 'sqlite' else None)}"  # noqa: E501
            for s in ("ins", "upd", "del")
        ]
    return stmts if keep_changelog else [*stmts, f"DROP TABLE IF EXISTS {log}"]


def _postgresql(d: sa.Dialect, n: CaptureNames, key: Sequence[str]) -> list[str]:
    log, fn, table = _qt(d, n.changelog, n.schema), _qt(d, n.trigger, n.schema), _qt(d, n.table, n.schema)
    new_key = ", ".join(f"NEW.{_q(d, k)}" for k in key)
    old_key = ", ".join(f"OLD.{_q(d, k)}" for k in key)
    return [
        f"CREATE TABLE IF NOT EXISTS {log} (seq BIGSERIAL PRIMARY KEY, op CHAR(1) NOT NULL, "
        "key_json TEXT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())",
        f"""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    INSERT INTO {log} (op, key_json) VALUES ('D', json_build_array({old_key})::text);
    RETURN OLD;
  END IF;
  IF TG_OP = 'UPDATE' AND ROW({old_key}) IS DISTINCT FROM ROW({new_key}) THEN
    INSERT INTO {log} (op, key_json) VALUES ('D', json_build_array({old_key})::text);
  END IF;
  INSERT INTO {log} (op, key_json) VALUES (left(TG_OP, 1), json_build_array({new_key})::text);
  RETURN NEW;
END $$""",
        f"DROP TRIGGER IF EXISTS {_q(d, n.trigger)} ON {table}",
        f"CREATE TRIGGER {_q(d, n.trigger)} AFTER INSERT OR UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {fn}()",
    ]


def _mysql(d: sa.Dialect, n: CaptureNames, key: Sequence[str]) -> list[str]:
    log, table = _qt(d, n.changelog, n.schema), _qt(d, n.table, n.schema)
    new_key = ", ".join(f"NEW.{_q(d, k)}" for k in key)
    old_key = ", ".join(f"OLD.{_q(d, k)}" for k in key)
    same_key = " AND ".join(f"OLD.{_q(d, k)} <=> NEW.{_q(d, k)}" for k in key)

    def trig(suffix: str) -> str:
        return _qt(d, f"{n.trigger}_{suffix}", n.schema)

    return [
        f"CREATE TABLE IF NOT EXISTS {log} (seq BIGINT AUTO_INCREMENT PRIMARY KEY, op CHAR(1) NOT NULL, "
        "key_json TEXT NOT NULL, at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))",
        *(f"DROP TRIGGER IF EXISTS {trig(s)}" for s in ("ins", "upd", "del")),
        f"CREATE TRIGGER {trig('ins')} AFTER INSERT ON {table} FOR EACH ROW "
        f"INSERT INTO {log} (op, key_json) VALUES ('I', JSON_ARRAY({new_key}))",
        f"""CREATE TRIGGER {trig("upd")} AFTER UPDATE ON {table} FOR EACH ROW BEGIN
  IF NOT ({same_key}) THEN INSERT INTO {log} (op, key_json) VALUES ('D', JSON_ARRAY({old_key})); END IF;
  INSERT INTO {log} (op, key_json) VALUES ('U', JSON_ARRAY({new_key}));
END""",
        f"CREATE TRIGGER {trig('del')} AFTER DELETE ON {table} FOR EACH ROW "
        f"INSERT INTO {log} (op, key_json) VALUES ('D', JSON_ARRAY({old_key}))",
    ]


def _sqlite(d: sa.Dialect, n: CaptureNames, key: Sequence[str]) -> list[str]:
    log, table = _q(d, n.changelog), _q(d, n.table)
    new_key = ", ".join(f"NEW.{_q(d, k)}" for k in key)
    old_key = ", ".join(f"OLD.{_q(d, k)}" for k in key)
    same_key = " AND ".join(f"OLD.{_q(d, k)} IS NEW.{_q(d, k)}" for k in key)

    def trig(suffix: str) -> str:
        return _q(d, f"{n.trigger}_{suffix}")

    return [
        f"CREATE TABLE IF NOT EXISTS {log} (seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, "
        "key_json TEXT NOT NULL, at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')))",
        *(f"DROP TRIGGER IF EXISTS {trig(s)}" for s in ("ins", "upd", "del")),
        f"CREATE TRIGGER {trig('ins')} AFTER INSERT ON {table} BEGIN "
        f"INSERT INTO {log} (op, key_json) VALUES ('I', json_array({new_key})); END",
        f"CREATE TRIGGER {trig('upd')} AFTER UPDATE ON {table} BEGIN "
        f"INSERT INTO {log} (op, key_json) SELECT 'D', json_array({old_key}) WHERE NOT ({same_key}); "
        f"INSERT INTO {log} (op, key_json) VALUES ('U', json_array({new_key})); END",
        f"CREATE TRIGGER {trig('del')} AFTER DELETE ON {table} BEGIN "
        f"INSERT INTO {log} (op, key_json) VALUES ('D', json_array({old_key})); END",
    ]
