"""Expand/contract: change a live table's schema in place, across engines.

``spec`` (the ``kind: expand_contract`` spec), ``columns`` (expand, sync triggers, contract,
rollback: DDL under ``locking``'s lock timeout and retries), ``backfill`` (the column in keyset
batches, checkpointed), ``validate`` (new = up(old) on every row, in the database), ``plan`` (the
typed stages the evaluator runs), ``snapshot`` (schema and rows, to prove a rollback). One module
per engine in ``engines/``. Plain functions over engines: the flows in ``flows/expand.py`` wrap them.
"""
