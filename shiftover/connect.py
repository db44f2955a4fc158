"""Engines for the databases a migration touches, made once per URL and per process.

URLs are normalised to the drivers Shiftover ships with (psycopg 3 for PostgreSQL, PyMySQL
for MySQL/MariaDB); SQLite gets WAL and a busy timeout so the flows and a live application
can share a file. Nothing here ever prints a password: use ``redact`` in messages.

A URL may be a reference (``${ORDERS_OLD_URL}``, ``file:...``, ``block:...``, see
``shiftover.credentials``): it is resolved here, when its engine is made, and nowhere else. The
engine is cached under the reference, so the secret is looked up once per process.
"""

from __future__ import annotations

import threading

from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError

from shiftover import credentials
from shiftover.engines import EngineDialect, find_dialect
from shiftover.errors import CredentialError

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def normalise_url(url: str | URL) -> URL:
    """Parse a URL (resolving a reference: the result holds the secret, keep it to connect only)
    and pin the driver Shiftover uses for its engine (``mariadb+pymysql`` kept as spelt)."""
    parsed = _parse(url)
    dialect = find_dialect(parsed)
    return dialect.normalise_url(parsed) if dialect is not None else parsed


def redact(url: str | URL) -> str:
    """The URL as it may appear in logs and errors: a reference as written (it names where the
    secret lives), otherwise with its password hidden (``?password=`` too)."""
    if isinstance(url, str) and credentials.is_reference(url) and not credentials.inline_password_problem(url, ""):
        return url
    parsed = make_url(url)
    hidden = {k: "***" for k in parsed.query if k.lower() in ("password", "passwd")}
    return parsed.update_query_dict(hidden).render_as_string(hide_password=True)


def get_engine(url: str | URL) -> Engine:
    """One pooled engine per URL (or per reference) for this process."""
    if isinstance(url, str) and credentials.is_reference(url):
        cache_key = f"reference:{url}"
    else:
        cache_key = normalise_url(url).render_as_string(hide_password=False)
    with _lock:
        engine = _engines.get(cache_key)
        if engine is None:
            engine = _create_engine(normalise_url(url))
            _engines[cache_key] = engine
        return engine


def _parse(url: str | URL) -> URL:
    """``make_url`` on the resolved value; a resolved value that is no URL is reported by its
    reference (SQLAlchemy's message does not quote the string, but stay on the safe side)."""
    if isinstance(url, URL) or not credentials.is_reference(url):
        return make_url(url)
    try:
        return make_url(credentials.resolve(url))
    except ArgumentError:
        raise CredentialError(url, "resolves to something that is not a database URL") from None


def dispose_engines() -> None:
    """Close every pooled connection (tests, forked workers)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def _create_engine(url: URL) -> Engine:
    return (find_dialect(url) or EngineDialect()).create_engine(url)
