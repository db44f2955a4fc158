"""The copy engine: keyset segments, per-dialect COPY-class write paths, checkpoints, throttle.

Entry points: ``run_backfill`` (no Prefect), ``prepare_backfill`` + ``copy_segment`` (what the
flow's tasks call), ``backfill_status`` (``shiftover status``), ``set_throttle`` (pause,
resume, retune from the CLI), ``target_ddl`` (``shiftover plan`` with ``create_target``).
"""

from shiftover.backfill.checkpoints import BackfillStatus, backfill_status, clear_plan, load_plan
from shiftover.backfill.copy import SegmentReport, copy_segment
from shiftover.backfill.keyset import KeyRange, Segment, plan_segments
from shiftover.backfill.run import BackfillSummary, make_throttle, prepare_backfill, run_backfill
from shiftover.backfill.throttle import Throttle, set_throttle, throttle_flag_key
from shiftover.backfill.typemap import create_target_table, target_ddl

__all__ = [
    "BackfillStatus",
    "BackfillSummary",
    "KeyRange",
    "Segment",
    "SegmentReport",
    "Throttle",
    "backfill_status",
    "clear_plan",
    "copy_segment",
    "create_target_table",
    "load_plan",
    "make_throttle",
    "plan_segments",
    "prepare_backfill",
    "run_backfill",
    "set_throttle",
    "target_ddl",
    "throttle_flag_key",
]
