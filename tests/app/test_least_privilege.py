"""Issue 16: an application holds control-store credentials on every instance, so its role may
read flags and append to the queue, metrics and shadow mismatches, and nothing else. The
dual-writer runs under exactly the GRANTs `shiftover plan --ddl` prints, on PostgreSQL and
MariaDB; the specs (with their URLs), the flags' values and the audit log stay out of its reach."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from shiftover import cutover as flips
from shiftover.connect import dispose_engines, get_engine
from shiftover.control import schema
from shiftover.control.grants import mysql_grants, postgresql_grants
from shiftover.control.store import open_store
from shiftover.demo import create_orders, orders_table
from shiftover.dualwrite import DualWriter
from shiftover.metrics import Recorder
from shiftover.reconcile import enqueue, queue_depth
from shiftover.spec import parse_spec

HOSTS = ("%", "localhost", "127.0.0.1")


@pytest.fixture(params=["postgresql", "mariadb"])
def restricted(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(admin URL, application URL) of a fresh control store whose application role has only the GRANTs."""
    fresh = request.getfixturevalue("pg_database" if request.param == "postgresql" else "mariadb_database")
    admin_url: str = fresh()
    store = open_store(admin_url)  # the orchestrator creates the schema, as the tables' owner
    app, orchestrator = f"so_app_{uuid.uuid4().hex[:8]}", f"so_orch_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        if request.param == "postgresql":
            for role in (app, orchestrator):
                conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
            statements = postgresql_grants(app, orchestrator)
        else:
            statements = []
            for host in HOSTS:
                for user in (app, orchestrator):
                    conn.execute(sa.text(f"CREATE USER '{user}'@'{host}'"))
                statements += mysql_grants(app, orchestrator, store.engine.url.database or "", host=host)
        for statement in statements:
            conn.execute(sa.text(statement))
    yield admin_url, sa.make_url(admin_url).set(username=app).render_as_string(hide_password=False)
    dispose_engines()
    with admin.connect() as conn:
        if request.param == "postgresql":
            conn.execute(sa.text(f"DROP OWNED BY {app}, {orchestrator}"))
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {app}"))
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {orchestrator}"))
        else:
            for host in HOSTS:
                for user in (app, orchestrator):
                    conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'{host}'"))
    admin.dispose()


def test_the_dual_writer_works_under_the_application_grants_and_can_do_nothing_else(
    restricted: tuple[str, str], sqlite_database: Callable[[], str]
) -> None:
    admin_url, app_url = restricted
    old_url, new_url = sqlite_database(), sqlite_database()
    create_orders(get_engine(old_url), rows=10)
    orders_table().create(get_engine(new_url))
    spec = parse_spec(
        {
            "name": "orders-lp",
            "source": {"url": old_url, "table": "orders"},
            "target": {"url": new_url, "table": "orders"},
            "key": "id",
        }
    )
    store = open_store(admin_url)
    store.register(spec.name, {"name": spec.name, "source": {"url": old_url}})
    flips.enable_dual_write(store.engine, spec.name, "test")

    with get_engine(old_url).connect() as conn:
        orders = orders_table()
        row = dict(conn.execute(sa.select(orders).where(orders.c.id == 1)).mappings().one())
    writer = DualWriter.from_spec(spec, app_url)  # reads its flags through the application role
    try:
        writer.upsert({**row, "id": 1_000, "note": "written by the app role"})
    finally:
        writer.close()
    with get_engine(new_url).connect() as conn:
        assert (
            conn.execute(sa.text("SELECT note FROM orders WHERE id = 1000")).scalar_one() == "written by the app role"
        )

    app = sa.create_engine(app_url, poolclass=sa.pool.NullPool)
    assert enqueue(app, spec.name, [((7,), "upsert")], error="secondary down", direction="old->new") == 1
    recorder = Recorder(app, spec.name)
    recorder.count("shadow_reads", 3)
    recorder.mismatch((1,), ["note"], {"note": "a"}, {"note": "b"})
    assert recorder.flush()  # metrics and a shadow mismatch appended
    assert queue_depth(store.engine, spec.name).get("pending") == 1
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.shadow_mismatches)).scalar_one() == 1
    denied = [
        sa.select(schema.migrations.c.spec),  # the specs: URLs of both databases
        sa.update(schema.flags).values(version=99),  # flipping a flag
        sa.insert(schema.audit_log).values(migration="x", at=sa.func.now(), actor="app", action="approval", detail={}),
        sa.select(schema.reconcile_queue.c.key_json),  # reading what others queued
        sa.delete(schema.metrics),
    ]
    for statement in denied:
        with pytest.raises(sa.exc.DBAPIError, match=r"(?i)denied"), app.begin() as conn:
            conn.execute(statement)
    app.dispose()
