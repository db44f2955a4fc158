"""Engines for the databases a migration touches, made once per URL and per process.

URLs are normalised to the drivers Shiftover ships with (psycopg 3 for PostgreSQL, PyMySQL
for MySQL/MariaDB); SQLite gets WAL and a busy timeout so the flows and a live application
can share a file. Nothing here ever prints a password: use ``redact`` in messages.
"""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def normalise_url(url: str | URL) -> URL:
    """Parse a URL and pin the driver Shiftover uses for its dialect."""
    parsed = make_url(url)
    driver = _DRIVERS.get(parsed.drivername)
    if driver:
        parsed = parsed.set(drivername=driver)
    if parsed.drivername.startswith("mysql") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def redact(url: str | URL) -> str:
    """The URL as it may appear in logs and errors: password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def get_engine(url: str | URL) -> Engine:
    """One pooled engine per URL for this process."""
    parsed = normalise_url(url)
    cache_key = parsed.render_as_string(hide_password=False)
    with _lock:
        engine = _engines.get(cache_key)
        if engine is None:
            engine = _create_engine(parsed)
            _engines[cache_key] = engine
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests, forked workers)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def _create_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        return _create_sqlite_engine(url)
    return sa.create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)


def _create_sqlite_engine(url: URL) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine
