"""Engines for the databases a migration touches, made once per URL and per process.

URLs are normalised to the drivers Shiftover ships with (psycopg 3 for PostgreSQL, PyMySQL
for MySQL/MariaDB); SQLite gets WAL and a busy timeout so the flows and a live application
can share a file. Nothing here ever prints a password: use ``redact`` in messages.

A URL may be a reference (``${ORDERS_OLD_URL}``, ``file:...``, ``block:...``, see
``shiftover.credentials``): it is resolved here and nowhere else. The engine is cached under the
reference, and the reference is resolved again (at most every ``RESOLVE_EVERY_SECONDS``) whenever
the pool opens a new connection, so a rotated secret (a mounted file rewritten, a Secret block
updated) reaches new connections without a restart; the pool's open connections stay as they were
authenticated. When resolving fails then, the last value that resolved is used and a warning logged
(a secret store that is briefly down does not take the database with it); a reference that now
names another kind of database is refused on that connection.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Dialect, Engine, make_url
from sqlalchemy.exc import ArgumentError

from shiftover import credentials
from shiftover.engines import EngineDialect, find_dialect
from shiftover.errors import CredentialError

_engines: dict[str, Engine] = {}
_lock = threading.Lock()
log = logging.getLogger(__name__)
RESOLVE_EVERY_SECONDS = 5.0


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
            resolved = normalise_url(url)
            engine = _create_engine(resolved)
            if isinstance(url, str) and credentials.is_reference(url):
                _RefreshedSecret(url, engine, resolved).listen()
            _engines[cache_key] = engine
        return engine


class _RefreshedSecret:
    """Resolves ``reference`` again for each new connection of ``engine`` (``do_connect``), so the
    arguments the driver gets follow the secret."""

    def __init__(self, reference: str, engine: Engine, resolved: URL) -> None:
        self.reference, self.engine = reference, engine
        self.driver = engine.url.drivername
        self._lock = threading.Lock()
        # seeded with what ``get_engine`` just resolved: its first connections ask the secret store again
        # only after ``RESOLVE_EVERY_SECONDS`` (a Secret block lookup is an API call)
        args, params = engine.dialect.create_connect_args(resolved)
        self._args: list[Any] = list(args)  # the driver's arguments last resolved
        self._params: dict[str, Any] | None = dict(params)  # and its keyword arguments
        self._at = time.monotonic()

    def listen(self) -> None:
        event.listen(self.engine, "do_connect", self._connect)

    def _connect(self, dialect: Dialect, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
        fresh_args, fresh_params = self._resolved(dialect)
        cargs[:] = fresh_args
        cparams.update(fresh_params)  # connect_args the engine was made with stay

    def _resolved(self, dialect: Dialect) -> tuple[list[Any], dict[str, Any]]:
        with self._lock:
            if self._params is not None and time.monotonic() - self._at < RESOLVE_EVERY_SECONDS:
                return self._args, self._params
            try:
                url = normalise_url(self.reference)
            except CredentialError as exc:
                if self._params is None:
                    raise
                log.warning("%s; connecting with the value it last resolved to", exc)
                return self._args, self._params
            if url.drivername != self.driver:
                raise CredentialError(
                    self.reference, f"now names a {url.drivername} database, this engine connects to {self.driver}"
                )
            args, params = dialect.create_connect_args(url)
            self._args, self._params, self._at = list(args), dict(params), time.monotonic()
            return self._args, self._params


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
