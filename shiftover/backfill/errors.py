"""Driver errors sorted into the two copy families: data errors stop, lost connections retry."""

from __future__ import annotations

import sqlite3

import psycopg
import pymysql
import sqlalchemy as sa

from shiftover.errors import CopyError, TransientCopyError, describe_error

# MySQL/MariaDB: can't connect, server gone away, lost connection, lock wait timeout, deadlock,
# server shutdown in progress, query interrupted (a killed connection).
_MYSQL_TRANSIENT = {1053, 1205, 1213, 1317, 2003, 2006, 2013, 2055}


def copy_error(table: str, key_range: str, exc: BaseException) -> CopyError | None:
    """The ``CopyError`` for a driver error, or None when ``exc`` is not a database error."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    cause = describe_error(orig)
    if _transient(exc, orig):
        return TransientCopyError(table, key_range, cause)
    if isinstance(orig, psycopg.Error | pymysql.err.Error | sqlite3.Error) or isinstance(exc, sa.exc.DBAPIError):
        return CopyError(table, key_range, cause)
    return None


def _transient(exc: BaseException, orig: BaseException) -> bool:
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(orig, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure):
        return True
    if isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError):
        return True
    if isinstance(orig, pymysql.err.OperationalError | pymysql.err.InternalError | pymysql.err.InterfaceError):
        code = orig.args[0] if orig.args and isinstance(orig.args[0], int) else None
        return isinstance(orig, pymysql.err.InterfaceError) or code in _MYSQL_TRANSIENT
    if isinstance(orig, sqlite3.OperationalError):
        return "locked" in str(orig) or "busy" in str(orig)
    return False
