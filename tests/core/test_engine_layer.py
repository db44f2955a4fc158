"""Engine quirks live in ``shiftover/engines/`` only: the rest of the package asks ``dialect_for``.

The scan reads the source (no import): a ``.dialect.name``, a URL's backend or driver name, or a
string literal naming an engine outside ``shiftover/engines/`` fails the test with its file and line.
Alembic's revisions of the control store are left out: they are history, never edited.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from shiftover.connect import get_engine, normalise_url
from shiftover.engines import dialect_for, find_dialect, run_literal, same_dialect
from shiftover.errors import UnsupportedEngineError

PACKAGE = Path(__file__).resolve().parents[2] / "shiftover"
# shiftover/schema/engines is the schema-change layer's own one-module-per-engine folder (its
# dispatch included); Alembic revisions are frozen history
EXEMPT = ("engines", "schema/engines", "control/migrations")
ENGINE_NAMES = {"postgresql", "postgres", "mysql", "mariadb", "sqlite"}
NAME_ATTRIBUTES = {"get_backend_name", "get_driver_name", "is_mariadb"}


def dialect_branches(source: str) -> list[tuple[int, str]]:
    """(line, what) for every engine-name test in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lower() in ENGINE_NAMES:
            found.append((node.lineno, repr(node.value)))
        elif isinstance(node, ast.Attribute) and node.attr in NAME_ATTRIBUTES:
            found.append((node.lineno, node.attr))
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "name"
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "dialect"
        ):
            found.append((node.lineno, ".dialect.name"))
    return sorted(found)


def test_no_dialect_branch_outside_the_engine_modules() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {what}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if not any(path.relative_to(PACKAGE).as_posix().startswith(e) for e in EXEMPT)
        for line, what in dialect_branches(path.read_text())
    ]
    assert offenders == [], "engine quirks belong in shiftover/engines/<engine>.py:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "snippet",
    [
        "if engine.dialect.name == 'postgresql': pass",
        "x = conn.dialect.name in ('mysql', 'mariadb')",
        "WRITERS = {'sqlite': object}",
        "is_lite = make_url(url).get_backend_name() == backend",
    ],
)
def test_the_scan_sees_each_kind_of_branch(snippet: str) -> None:
    assert dialect_branches(snippet)


def test_the_scan_leaves_ordinary_code_alone() -> None:
    assert dialect_branches("quote = engine.dialect.identifier_preparer.quote\nname = table.name") == []


@pytest.mark.parametrize(
    ("url", "module"),
    [
        ("postgresql://u@h/db", "postgresql"),
        ("postgresql+psycopg://u@h/db", "postgresql"),
        ("postgres://u@h/db", "postgresql"),
        ("mysql+pymysql://u@h/db", "mysql"),
        ("mariadb+pymysql://u@h/db", "mysql"),
        ("mariadb://u@h/db", "mysql"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_every_spelling_finds_its_engine_module(url: str, module: str) -> None:
    assert dialect_for(url).name == module
    assert dialect_for(normalise_url(url)).name == module


def test_an_engine_or_its_dialect_finds_the_module_too() -> None:
    engine = sa.create_engine("sqlite://")
    assert dialect_for(engine) is dialect_for(engine.dialect) is dialect_for("sqlite://")
    with engine.connect() as conn:
        assert dialect_for(conn) is dialect_for(engine)


def test_an_unsupported_engine_is_refused_by_name() -> None:
    with pytest.raises(UnsupportedEngineError, match="oracle"):
        dialect_for("oracle://u@h/db")
    assert find_dialect("oracle://u@h/db") is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("mysql://u@h/db", "mysql+pymysql://u@h/db?charset=utf8mb4"),
        ("mariadb://u@h/db", "mysql+pymysql://u@h/db?charset=utf8mb4"),
        ("mariadb+pymysql://u@h/db", "mariadb+pymysql://u@h/db?charset=utf8mb4"),
        ("mysql+pymysql://u@h/db?charset=latin1", "mysql+pymysql://u@h/db?charset=latin1"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_urls_get_the_shipped_driver_and_utf8mb4(url: str, expected: str) -> None:
    assert normalise_url(url).render_as_string() == expected


def test_mysql_and_mariadb_names_share_a_module_but_not_a_dialect() -> None:
    mysql, mariadb = sa.create_engine("mysql+pymysql://u@h/db"), sa.create_engine("mariadb+pymysql://u@h/db")
    assert dialect_for(mysql) is dialect_for(mariadb)
    assert not same_dialect(mysql, mariadb)  # compared as across engines: their servers' texts may differ


@pytest.mark.parametrize("kind", ["postgres", "mariadb", "sqlite"])
def test_literal_sql_reaches_the_server_as_written(kind: str, database_url: Callable[[str], str]) -> None:
    """A spec's expression with ``%`` (modulo, a LIKE pattern) runs as written: psycopg and PyMySQL
    would read it as a placeholder (psycopg: "incomplete placeholder") under ``exec_driver_sql``."""
    engine = get_engine(database_url(kind))
    with engine.connect() as conn:
        row = run_literal(conn, "SELECT 17 % 5, '100%', CASE WHEN 'a%b' LIKE 'a%' THEN 1 ELSE 0 END").one()
    assert tuple(row) == (2, "100%", 1)
