"""An exclusive lock on a file, between the processes of one machine (``flock``), for what has no
server to lock on: a SQLite database file's DDL, a gateway's directory. Re-entrant in its thread:
a thread already holding the lock goes on (two tables of one SQLite file claimed together), where
a second ``flock`` of its own would wait for itself."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_held = threading.local()  # the lock files this thread holds


@contextmanager
def exclusive_file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing; links resolved, so every
    spelling of one file is one lock) until the block ends. ``OSError`` when it cannot be opened."""
    lock_path = os.path.realpath(path)
    held_here: set[str] = _held.__dict__.setdefault("paths", set())
    if lock_path in held_here:
        yield
        return
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        held_here.add(lock_path)
        try:
            yield
        finally:
            held_here.discard(lock_path)
            fcntl.flock(lock, fcntl.LOCK_UN)
