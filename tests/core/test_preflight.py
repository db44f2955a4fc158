"""A spec is checked against the live databases before anything is written."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from shiftover.connect import get_engine
from shiftover.demo import create_orders
from shiftover.errors import SpecError
from shiftover.preflight import resolve_mapping
from shiftover.spec import parse_spec


def spec_for(src: str, dst: str, **over: object):  # type: ignore[no-untyped-def]
    data: dict[str, object] = {
        "name": "m",
        "source": {"url": src, "table": "orders"},
        "target": {"url": dst, "table": "orders"},
        "key": ["id"],
    }
    data.update(over)
    return parse_spec(data)


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def two_databases(request: pytest.FixtureRequest, database_url: Callable[[str], str]) -> tuple[str, str]:
    src, dst = database_url(request.param), database_url(request.param)
    create_orders(get_engine(src), rows=10)
    create_orders(get_engine(dst), rows=0)
    return src, dst


def test_resolves_all_columns(two_databases: tuple[str, str]) -> None:
    mapping = resolve_mapping(spec_for(*two_databases))
    assert mapping.target_columns == ("id", "customer_id", "amount", "status", "note", "created_at", "updated_at")
    assert mapping.target_key == ("id",) and mapping.fast_path


def test_unknown_table(two_databases: tuple[str, str]) -> None:
    src, dst = two_databases
    with pytest.raises(SpecError) as err:
        resolve_mapping(spec_for(src, dst, source={"url": src, "table": "ordres"}))
    assert err.value.field == "source.table" and "no table 'ordres'" in err.value.problem


def test_unknown_column(two_databases: tuple[str, str]) -> None:
    with pytest.raises(SpecError) as err:
        resolve_mapping(spec_for(*two_databases, columns=["id", "amonut"]))
    assert err.value.field == "columns.1.name" and "unknown column 'amonut'" in err.value.problem


def test_key_that_is_not_unique(two_databases: tuple[str, str]) -> None:
    with pytest.raises(SpecError) as err:
        resolve_mapping(spec_for(*two_databases, key=["customer_id"]))
    assert err.value.field == "key" and "no primary or unique key on ['customer_id']" in err.value.problem


def test_key_column_missing_from_target(two_databases: tuple[str, str]) -> None:
    src, dst = two_databases
    engine = get_engine(dst)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE orders2 (order_id BIGINT PRIMARY KEY, amount NUMERIC(12,2))"))
    spec = spec_for(src, dst, target={"url": dst, "table": "orders2"}, columns=["id", "amount"])
    with pytest.raises(SpecError) as err:
        resolve_mapping(spec)
    assert err.value.field == "key" and "missing from target table 'orders2'" in err.value.problem


def test_table_without_any_key(sqlite_database: Callable[[], str]) -> None:
    src, dst = sqlite_database(), sqlite_database()
    with get_engine(src).begin() as conn:
        conn.execute(sa.text("CREATE TABLE orders (id INTEGER, amount NUMERIC)"))
    with pytest.raises(SpecError, match=r"has no primary or unique key on \['id'\] \(its keys: none\)"):
        resolve_mapping(spec_for(src, dst))


@pytest.mark.parametrize(
    ("url", "environment"),
    [
        ("${SO_TEST_OLD_URL}", {"SO_TEST_OLD_URL": "postgresql://postgres:s3cret-pw@127.0.0.1:1/nowhere"}),
        ("mysql://root:${SO_TEST_PASSWORD}@127.0.0.1:1/nowhere", {"SO_TEST_PASSWORD": "s3cret-pw"}),
    ],
)
def test_unreachable_database_hides_password(
    url: str, environment: dict[str, str], sqlite_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SpecError) as err:
        resolve_mapping(spec_for(url, sqlite_database()))
    assert err.value.field == "source.url"
    assert "cannot reach" in err.value.problem
    assert "s3cret-pw" not in str(err.value) and url in str(err.value)  # the reference, never its value


def test_an_unset_reference_is_named_by_its_field(sqlite_database: Callable[[], str]) -> None:
    with pytest.raises(SpecError) as err:
        resolve_mapping(spec_for("${SO_TEST_NEVER_SET}", sqlite_database()))
    assert err.value.field == "source.url"
    assert "environment variable SO_TEST_NEVER_SET is not set" in err.value.problem
