"""Engines for the databases a migration touches, made once per URL and per process.

URLs are normalised to the drivers Shiftover ships with (psycopg 3 for PostgreSQL, PyMySQL
for MySQL/MariaDB); SQLite gets WAL and a busy timeout so the flows and a live application
can share a file. Nothing here ever prints a password: use ``redact`` in messages.
"""

from __future__ import annotations

import threading

from sqlalchemy.engine import URL, Engine, make_url

from shiftover.engines import EngineDialect, find_dialect

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def normalise_url(url: str | URL) -> URL:
    """Parse a URL and pin the driver Shiftover uses for its engine (``mariadb+pymysql`` kept as spelt)."""
    parsed = make_url(url)
    dialect = find_dialect(parsed)
    return dialect.normalise_url(parsed) if dialect is not None else parsed


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
    return (find_dialect(url) or EngineDialect()).create_engine(url)
