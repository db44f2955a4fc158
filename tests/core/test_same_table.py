"""Source and target spelt differently but one table: refused before anything runs (issue 11 §1).

Each case asks the real server; two different tables that look alike (same name in another
database, or on another file) are allowed."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from shiftover.connect import get_engine
from shiftover.demo import create_orders
from shiftover.errors import SpecError
from shiftover.preflight import resolve_mapping
from shiftover.spec import parse_spec


def spec(src: str, dst: str, src_table: str = "orders", dst_table: str = "orders") -> object:
    return parse_spec(
        {
            "name": "same",
            "source": {"url": src, "table": src_table},
            "target": {"url": dst, "table": dst_table},
            "key": ["id"],
        }
    )


def respell(url: str, **parts: object) -> str:
    return sa.make_url(url).set(**parts).render_as_string(hide_password=False)


def test_postgresql_same_table_under_other_spellings(pg_database: Callable[[], str]) -> None:
    url = pg_database()
    create_orders(get_engine(url), rows=3)
    other = respell(url, drivername="postgresql", host="localhost")
    with pytest.raises(SpecError, match="are the same table on the same server"):
        resolve_mapping(spec(url, other))  # type: ignore[arg-type]
    schema_spelt = parse_spec(
        {
            "name": "same",
            "source": {"url": url, "table": "orders"},
            "target": {"url": other, "table": "orders", "schema": "public"},
            "key": ["id"],
        }
    )
    with pytest.raises(SpecError, match="same table"):
        resolve_mapping(schema_spelt)
    elsewhere = pg_database()  # the same name in another database is another table
    create_orders(get_engine(elsewhere), rows=0)
    assert resolve_mapping(spec(url, elsewhere)).target_table == "orders"  # type: ignore[arg-type]


def test_mariadb_same_table_under_both_driver_names(mariadb_database: Callable[[], str]) -> None:
    url = mariadb_database()
    create_orders(get_engine(url), rows=3)
    other = respell(url, drivername="mariadb+pymysql", host="localhost")
    with pytest.raises(SpecError, match="same table"):
        resolve_mapping(spec(url, other))  # type: ignore[arg-type]
    elsewhere = mariadb_database()
    create_orders(get_engine(elsewhere), rows=0)
    assert resolve_mapping(spec(url, elsewhere)).target_table == "orders"  # type: ignore[arg-type]


def test_sqlite_same_file_by_another_path_or_a_link(tmp_path: Path) -> None:
    db = tmp_path / "a" / "shop.db"
    db.parent.mkdir()
    create_orders(get_engine(f"sqlite:///{db}"), rows=3)
    link = tmp_path / "link.db"
    os.symlink(db, link)
    for other in (f"sqlite:///{tmp_path}/a/../a/shop.db", f"sqlite:///{link}"):
        with pytest.raises(SpecError, match="same table"):
            resolve_mapping(spec(f"sqlite:///{db}", other, "orders", "ORDERS"))  # type: ignore[arg-type]
    copy = tmp_path / "copy.db"
    create_orders(get_engine(f"sqlite:///{copy}"), rows=0)
    assert resolve_mapping(spec(f"sqlite:///{db}", f"sqlite:///{copy}")).target_table == "orders"  # type: ignore[arg-type]
