"""The dual-writer: what the application calls instead of writing its table directly.

Rows are in the old table's column names (the application's shape). The write mode comes from
the migration's flags, read from the ``FlagClient``'s cache on every call:

- ``old_only`` / ``new_only``: one store.
- ``dual_old_primary``: write old in its own transaction, then make new equal for that key: the
  full row image (deletes propagate) is read back from old inside the write's transaction
  (synchronous mode, plain columns, see ``image``), or after the commit by ``rowsync.sync_keys``
  (synchronous mode with ``sql:`` columns or a transform, and on a worker in asynchronous mode).
- ``dual_new_primary``: write new first (renames only), then make old equal from new.

A failed secondary write never reaches the caller: the key goes to the reconciliation queue. That
includes computing the secondary's row (a transform or ``sql:`` column that raises): it runs
after the primary's commit, never inside it.
A failed primary write raises as it would without Shiftover. A mapping with SQL-computed columns
or a Python transform cannot run new-primary: construction in that mode raises ``SpecError``,
and a later switch to it is refused (the writer stays old-primary and logs the error); flows
should call ``shiftover.reconcile.require_reversible`` before switching.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Mapping
from typing import Any, Self

from sqlalchemy.engine import Engine

from shiftover import metrics
from shiftover.dualwrite.image import image_in_transaction, read_image
from shiftover.dualwrite.reads import RoutedReader
from shiftover.dualwrite.replicator import Job, Replicator, run_later
from shiftover.engines import dialect_for
from shiftover.errors import SpecError
from shiftover.flags.client import FlagClient
from shiftover.flags.routing import Routing, WriteMode
from shiftover.mapping import TableMapping
from shiftover.metrics import Recorder
from shiftover.reconcile import reverse_mapping
from shiftover.rowsync import Key, key_in, upsert_rows
from shiftover.spec import MigrationSpec, ValidationSpec

log = logging.getLogger(__name__)
_NEW_PRIMARY = (WriteMode.DUAL_NEW_PRIMARY, WriteMode.NEW_ONLY)


def _close_at_exit(ref: weakref.ref[DualWriter]) -> None:
    writer = ref()
    if writer is not None:
        writer.close()


def _can_return(engine: Engine, mapping: TableMapping) -> bool:
    """RETURNING gives the image in one round trip (PostgreSQL, SQLite; MariaDB has no UPDATE ... RETURNING)."""
    return dialect_for(engine).update_returning and mapping.transform is None


def op_for(op: str, key: Key, written: Key) -> str:
    """The reconciliation op for a touched key: the old key of a moved row is gone from the source."""
    return "delete" if op == "delete" or key != written else "upsert"


class DualWriter:
    """Writes one table through the migration's current write mode. Thread-safe; share one."""

    def __init__(
        self,
        old: Engine,
        new: Engine,
        mapping: TableMapping,
        flags: FlagClient,
        store: Engine,
        migration: str,
        *,
        asynchronous: bool = False,
        queue_size: int = 10_000,
        workers: int = 2,
        shadow_sample: float = 1.0,
        max_mismatch_rows: int = 100,
        metrics_interval: float = 1.0,
        validation: ValidationSpec | None = None,
    ) -> None:
        self.old, self.new, self.mapping = old, new, mapping
        self.flags, self.store, self.migration = flags, store, migration
        self.recorder = Recorder(store, migration, max_mismatch_rows=max_mismatch_rows)
        self.replicator = Replicator(
            store,
            migration,
            self.recorder,
            asynchronous=asynchronous,
            queue_size=queue_size,
            workers=workers,
            old=old,
        )
        self.reader = RoutedReader(old, new, mapping, self.recorder, shadow_sample=shadow_sample, options=validation)
        self._renames = {c.source: c.target for c in mapping.columns if c.sql is None}
        self._reverse: TableMapping | None = None
        self._refused = False
        self._warned_orm = False
        if self.routing().writes in _NEW_PRIMARY:
            self._reverse_mapping()  # refuse at construction when new cannot be primary
        self._stripes = [threading.Lock() for _ in range(64)]
        self._owns_flags = False
        self._stop = threading.Event()
        self._ticker = run_later(metrics_interval, self._tick, self._stop)
        # On a normal interpreter exit, secondary writes still queued in memory are flushed (or
        # parked durably); a hard crash loses them, and the validation diff finds those keys.
        atexit.register(_close_at_exit, weakref.ref(self))

    @classmethod
    def from_spec(cls, spec: MigrationSpec, control_url: str, **kw: Any) -> DualWriter:
        """A dual-writer for a spec: engines, mapping and control store resolved from it."""
        from shiftover.connect import get_engine
        from shiftover.control.store import open_store
        from shiftover.preflight import resolve_mapping

        store = open_store(control_url, create=False).engine  # applications never change its schema
        flags = kw.pop("flags", None)
        owns = flags is None
        if flags is None:
            flags = FlagClient(store, prefix=f"{spec.name}:", ttl=kw.pop("ttl", 1.0))
        writer = cls(
            get_engine(spec.source.url),
            get_engine(spec.target.url),
            resolve_mapping(spec),
            flags,
            store,
            spec.name,
            validation=spec.validation,
            **kw,
        )
        writer._owns_flags = owns
        return writer

    # -- routing ------------------------------------------------------------------
    def routing(self) -> Routing:
        return self.flags.routing(self.migration)

    def key_of(self, row: Mapping[str, Any]) -> Key:
        try:
            return tuple(row[k] for k in self.mapping.key)
        except KeyError as exc:
            raise ValueError(f"row lacks key column {exc.args[0]!r} (key: {list(self.mapping.key)})") from None

    # -- writes -------------------------------------------------------------------
    def insert(self, row: Mapping[str, Any]) -> None:
        self._write("insert", self.key_of(row), dict(row))

    def upsert(self, row: Mapping[str, Any]) -> None:
        self._write("upsert", self.key_of(row), dict(row))

    def update(self, key: Key, values: Mapping[str, Any]) -> None:
        self._write("update", tuple(key), dict(values))

    def delete(self, key: Key) -> None:
        self._write("delete", tuple(key), {})

    def _write(self, op: str, key: Key, values: dict[str, Any]) -> None:
        mode = self._followable(self.routing().writes)
        self.recorder.count(metrics.WRITES)
        if op != "update":
            self.recorder.count(metrics.ROW_COUNT_CHANGES)
        keys = self._touched_keys(op, key, values)
        with self._stripes[hash(key) % len(self._stripes)]:
            if mode in _NEW_PRIMARY:
                route = (self.new, self.old, self._reverse_mapping())
                primary_values = self._to_new(values)
            else:
                route = (self.old, self.new, self.mapping)
                primary_values = values
            dual = mode in (WriteMode.DUAL_OLD_PRIMARY, WriteMode.DUAL_NEW_PRIMARY)
            src, dst, mapping = route
            # The inline secondary's image is read in the primary's transaction when nothing there can fail.
            inline = dual and not self.replicator.asynchronous and image_in_transaction(mapping)
            image = self._primary(src, mapping, op, key, primary_values, keys if inline else None)
            if not dual:
                return
            items = [(k, op_for(op, k, key)) for k in keys]
            if self.replicator.asynchronous:
                for k, k_op in items:
                    self.replicator.submit(Job(src, dst, mapping, k, k_op))
            elif image is not None:
                self.replicator.apply(dst, mapping, keys, image, items)
            else:  # computed columns: read and applied after the commit, failures queued
                self.replicator.replicate([Job(src, dst, mapping, k, k_op) for k, k_op in items])

    def _followable(self, mode: WriteMode) -> WriteMode:
        """Refuse a switch to new-primary that this mapping cannot serve: keep old primary (both
        stores still written, nothing lost) and say so loudly, rather than fail every request."""
        if mode not in _NEW_PRIMARY or self._reverse is not None:
            return mode
        try:
            self._reverse_mapping()
        except SpecError as exc:
            if not self._refused:
                log.error("%s: refusing to follow the switch to %s, staying old-primary: %s", self.migration, mode, exc)
                self._refused = True
            return WriteMode.DUAL_OLD_PRIMARY
        return mode

    def _touched_keys(self, op: str, key: Key, values: dict[str, Any]) -> list[Key]:
        """The key written, plus the new key when an update or upsert moves the row."""
        if op == "delete":
            return [key]
        moved = tuple(values.get(col, part) for col, part in zip(self.mapping.key, key, strict=True))
        return [key] if moved == key else [key, moved]

    @staticmethod
    def _primary(
        engine: Engine, mapping: TableMapping, op: str, key: Key, values: dict[str, Any], image_keys: list[Key] | None
    ) -> list[dict[str, Any]] | None:
        """Write the primary in its own transaction; with ``image_keys``, read their images before commit."""
        table = mapping.source_table_obj(engine)
        key_cols = mapping.key
        returning = image_keys is not None and _can_return(engine, mapping)
        with engine.begin() as conn:
            if op == "upsert":
                upsert_rows(conn, table, [values], key_cols)
            elif op == "delete":
                conn.execute(table.delete().where(key_in(table, key_cols, [key])))
                if image_keys == [key]:
                    return []  # the row is gone: its image is "absent", no need to read it back
            else:
                stmt = (
                    table.insert().values(values)
                    if op == "insert"
                    else table.update().where(key_in(table, key_cols, [key])).values(values)
                )
                if returning:  # the image in the write's own round trip
                    stmt = stmt.returning(*(c.select_expr(table) for c in mapping.columns))
                    return [dict(r._mapping) for r in conn.execute(stmt)]
                conn.execute(stmt)
            return read_image(conn, mapping, table, image_keys) if image_keys else None

    def _to_new(self, values: dict[str, Any]) -> dict[str, Any]:
        unknown = [c for c in values if c not in self._renames]
        if unknown:
            raise ValueError(f"column(s) {unknown} are not mapped to the new table {self.mapping.target_table!r}")
        return {self._renames[c]: v for c, v in values.items()}

    def _reverse_mapping(self) -> TableMapping:
        if self._reverse is None:
            self._reverse = reverse_mapping(self.mapping)  # raises SpecError when not reversible
        return self._reverse

    # -- reads --------------------------------------------------------------------
    def read(self, key: Key, attributes: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """The row (old column names) from the store the routing picks; shadowed when the flag says so."""
        return self.reader.read(tuple(key), self.routing(), attributes)

    # -- ORM sessions -------------------------------------------------------------
    def attach(self, session_or_factory: Any) -> None:
        """Replicate an ORM session's committed writes to the old table (see ``dualwrite.session``)."""
        from shiftover.dualwrite.session import attach_session

        attach_session(self, session_or_factory)

    def replicate_committed(self, keys: dict[Key, str]) -> None:
        """Secondary writes for keys an ORM session just committed to the old table."""
        mode = self.routing().writes
        self.recorder.count(metrics.WRITES, len(keys))
        self.recorder.count(metrics.ROW_COUNT_CHANGES, len(keys))  # a session's upserts may insert
        if mode == WriteMode.OLD_ONLY:
            return
        if mode in _NEW_PRIMARY and not self._warned_orm:
            # The session wrote the old table although new is the source of truth: copy it across,
            # but a failure queued now would be drained new -> old and undo the write in old.
            log.error(
                "%s: an ORM session bound to the old store committed while writes are %s; bind sessions "
                "to the new store or use the Core methods after the write switch",
                self.migration,
                mode,
            )
            self._warned_orm = True
        for key, op in keys.items():
            self.replicator.submit(Job(self.old, self.new, self.mapping, key, op))

    # -- lifecycle ----------------------------------------------------------------
    def _tick(self) -> None:
        self.replicator.retry_backlog()
        self.recorder.flush()

    def flush(self) -> None:
        """Wait for pending secondary writes, then write counters and held keys to the control store."""
        self.replicator.flush()
        self._tick()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self.replicator.close()
        self._stop.set()
        self._ticker.join(timeout=5)
        self._tick()
        if self._owns_flags:
            self.flags.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
