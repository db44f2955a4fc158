"""``shiftover demo --kind expand_contract``: a schema change in place on a live SQLite orders table.

``orders.amount`` (numeric) becomes ``orders.amount_cents`` (bigint, up ``round(amount * 100)``,
down ``amount_cents / 100.0``) through the ``expand-contract`` flow, from expand to
drop_old_columns, approvals answered automatically (the demo's spec says ``approvals.auto: true``
and names no approvers; each answer is recorded as automatic). An application thread keeps
writing with plain SQL the whole time: through the old column until the ``writes`` flag says
``new``, then through the new one; every failed write is counted. The demo waits until the
application writes through the new column before contract (as a real deployment waits for every
instance), and checks twice, by a plain SELECT and Python arithmetic (not Shiftover's validate),
that every row's ``amount_cents`` equals up(``amount``): right after validate, and right before
contract, while both columns still exist.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from shiftover.connect import dispose_engines, get_engine
from shiftover.control.store import PhaseChange, open_store, utcnow
from shiftover.demo.orders import create_orders, order_row, orders_table
from shiftover.errors import ShiftoverError
from shiftover.flags.store import get_flag
from shiftover.schema.plan import flag_key

NAME = "orders-amount-cents-demo"
UP = "round(amount * 100)"
DOWN = "amount_cents / 100.0"


def expected_cents(amount: Any) -> int | None:
    """up(old) in Python, from the value a plain SELECT returned: the demo's own arithmetic."""
    if amount is None:
        return None
    return int((Decimal(str(amount)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass
class ColumnCheck:
    """An independent check of ``amount_cents == up(amount)`` on every row."""

    when: str
    rows: int
    mismatches: list[tuple[int, Any, Any]] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return self.rows > 0 and not self.mismatches


def check_columns(url: str, when: str) -> ColumnCheck:
    """One plain SELECT of key, old and new column; up(old) computed here, compared exactly (an int)."""
    with get_engine(url).connect() as conn:
        rows = conn.execute(sa.text("SELECT id, amount, amount_cents FROM orders ORDER BY id")).all()
    check = ColumnCheck(when, len(rows))
    for key, amount, cents in rows:
        want = expected_cents(amount)
        if cents != want or (cents is not None and type(cents) is not int):
            check.mismatches.append((key, amount, cents))
    return check


class ColumnWriter:
    """The application: plain SQL writes on ``orders`` from its own thread until stopped, through the
    column the ``writes`` flag names (old until the flow switches writes). Updates of existing rows,
    and while writing the old column, inserts of new ones too."""

    def __init__(self, url: str, control_url: str, first_new_key: int, pause: float = 0.005) -> None:
        self.engine = get_engine(url)
        self.control = get_engine(control_url)
        self.next_key = first_new_key
        self.pause = pause
        self.writes = {"old": 0, "new": 0}
        self.failures: list[str] = []
        self.mode = "old"  # the column of the last write that committed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="expand-demo-writer", daemon=True)
        self._rng = random.Random(13)
        self._table = orders_table()  # the columns the application knew before the change

    def start(self) -> ColumnWriter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def wait_for(self, mode: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.mode != mode:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise ShiftoverError(f"the demo application did not start writing the {mode} column")
            time.sleep(0.01)

    def _column(self) -> str:
        flag = get_flag(self.control, flag_key(NAME, "writes"))
        return "new" if flag is not None and flag.value == {"columns": "new"} else "old"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                mode = self._column()
                key = self._rng.randrange(1, self.next_key)
                cents = self._rng.randrange(100, 10_000_000)
                with self.engine.begin() as conn:
                    if mode == "new":
                        conn.execute(
                            sa.text("UPDATE orders SET amount_cents = :c WHERE id = :k"), {"c": cents, "k": key}
                        )
                    elif self._rng.random() < 0.05:
                        conn.execute(self._table.insert(), order_row(self.next_key, self._rng))
                        self.next_key += 1
                    else:
                        amount = str(Decimal(cents) / 100)
                        conn.execute(sa.text("UPDATE orders SET amount = :a WHERE id = :k"), {"a": amount, "k": key})
                self.writes[mode] += 1
                self.mode = mode
            except Exception as exc:  # a failed write is what the demo counts, not a crash
                self.failures.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            time.sleep(self.pause)


@dataclass
class ExpandDemoReport:
    rows: int
    rows_end: int
    seconds: float
    ran: list[str]
    phase: str
    stage_seconds: dict[str, float]
    writes: dict[str, int]
    failures: list[str]
    checks: list[ColumnCheck]
    columns: list[str]
    automatic_approvals: list[str]
    history: list[PhaseChange]

    @property
    def ok(self) -> bool:
        return self.phase == "decommissioned" and not self.failures and all(c.held for c in self.checks)

    def render(self) -> str:
        lines = ["", "Phase history:"]
        for h in self.history:
            lines.append(f"  {h.at:%H:%M:%S}  {h.phase:<20} {h.actor:<34} {h.reason}")
        lines += [
            "",
            "Stages (three flow runs: to validate, to switch_writes, to the end; the first stage of the "
            "second and third includes starting its run): "
            + ", ".join(f"{k} {v:.2f}s" for k, v in self.stage_seconds.items()),
            "Approvals answered automatically (approvals.auto in the demo spec): "
            + ", ".join(self.automatic_approvals),
            f"Rows: {self.rows} at the start, {self.rows_end} at the end; columns now {', '.join(self.columns)}",
            f"The application during the change: {self.writes['old']} writes through amount, "
            f"{self.writes['new']} through amount_cents; {len(self.failures)} failed writes",
        ]
        lines += [f"  failed: {f}" for f in self.failures[:5]]
        for c in self.checks:
            verdict = "held" if c.held else f"FAILED on {len(c.mismatches)} rows, e.g. {c.mismatches[:3]}"
            lines.append(f"Independent check {c.when}: amount_cents == round(amount * 100) on {c.rows} rows: {verdict}")
        lines.append(f"Final phase {self.phase}. Done in {self.seconds:.1f}s.")
        return "\n".join(lines)


def spec_data(url: str, up: str = UP) -> dict[str, Any]:
    return {
        "kind": "expand_contract",
        "name": NAME,
        "database": {"url": url, "table": "orders"},
        "key": ["id"],
        "operations": [
            {
                "op": "change_column",
                "column": "amount",
                "to": "amount_cents",
                "type": "bigint",
                "up": up,
                "down": DOWN,
                "reversible": True,
            }
        ],
        "lock": {"timeout_ms": 500, "attempts": 50, "backoff_ms": 20, "max_backoff_ms": 200},
        "backfill": {"chunk_rows": 1000},
        "approvals": {"auto": True},  # the demo answers its own approvals; a real spec names approvers
        "retention_hours": 0,  # the demo drops the old column at once; a real spec keeps it a while (24 h by default)
    }


def stage_times(entries: list[dict[str, Any]], starts: list[datetime]) -> dict[str, float]:
    """Each stage's seconds from the control store's audit log, to the stage recorded done from the
    latest of: the previous stage done by the same flow run, the last entry written by anyone else
    (the spec registered at the first run's start), and when the demo started that flow run
    (``starts``, UTC). A later run's first stage so includes starting its flow run (~0.1 s)."""
    times: dict[str, float] = {}
    marks: dict[str, datetime] = {}  # actor -> its last stage done
    others: list[tuple[str, datetime]] = []
    for entry in entries:
        at = entry["at"].replace(tzinfo=None)
        if entry["action"] == "stage":
            began = max(
                [t for t in starts if t <= at]
                + [t for who, t in others if who != entry["actor"]]
                + ([marks[entry["actor"]]] if entry["actor"] in marks else []),
                default=at,
            )
            times[entry["detail"]["stage"]] = (at - began).total_seconds()
            marks[entry["actor"]] = at
        others.append((entry["actor"], at))
    return times


def prepare_expand(workdir: Path, rows: int, up: str = UP) -> tuple[Path, str]:
    """A fresh orders table, control store and spec under ``workdir``; returns (spec path, control
    URL). What the demo starts from, and what the ``expand-contract`` deployment's Quick run takes
    (``shiftover demo --kind expand_contract --prepare-only``)."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    url, control_url = f"sqlite:///{workdir.resolve()}/app.db", f"sqlite:///{workdir.resolve()}/control.db"
    create_orders(get_engine(url), rows=rows)
    spec_path = workdir / "orders-amount-cents.yaml"
    spec_path.write_text(yaml.safe_dump(spec_data(url, up), sort_keys=False))
    open_store(control_url)  # the orchestrator creates the control store before the application starts
    return spec_path, control_url


def run_expand_demo(
    rows: int = 5_000, workdir: Path = Path(".shiftover/demo-expand"), up: str = UP
) -> ExpandDemoReport:
    """The whole expand/contract demo on SQLite; ``up`` is the spec's SQL (the check's is fixed)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from shiftover.flows.expand import expand_contract

    started = time.monotonic()
    print(f"Preparing {rows} orders in {workdir}/app.db ...", flush=True)
    spec_path, control_url = prepare_expand(workdir, rows, up)
    url = f"sqlite:///{workdir.resolve()}/app.db"
    store = open_store(control_url)
    writer = ColumnWriter(url, control_url, first_new_key=rows + 1).start()
    ran: list[str] = []
    checks: list[ColumnCheck] = []
    starts: list[datetime] = []  # when each of the three flow runs was started (UTC, as the audit log)
    try:
        time.sleep(0.2)
        starts.append(utcnow().replace(tzinfo=None))
        result = expand_contract(str(spec_path), control_url, auto_approve=True, stop_after="validate")
        ran += result["ran"]
        checks.append(check_columns(url, "after validate"))
        starts.append(utcnow().replace(tzinfo=None))
        result = expand_contract(str(spec_path), control_url, auto_approve=True, stop_after="switch_writes")
        ran += result["ran"]
        writer.wait_for("new")  # every write now goes through amount_cents: contract can begin
        checks.append(check_columns(url, "before contract"))
        starts.append(utcnow().replace(tzinfo=None))
        result = expand_contract(str(spec_path), control_url, auto_approve=True)
        ran += result["ran"]
        time.sleep(0.2)
    finally:
        writer.stop()
    with get_engine(url).connect() as conn:
        columns = [c["name"] for c in sa.inspect(conn).get_columns("orders")]
        rows_end = conn.execute(sa.text("SELECT count(*) FROM orders")).scalar_one()
    approvals = store.audit_entries(NAME, action="approval")
    report = ExpandDemoReport(
        rows=rows,
        rows_end=rows_end,
        seconds=time.monotonic() - started,
        ran=ran,
        phase=str(result["phase"]),
        stage_seconds=stage_times(store.audit_entries(NAME), starts),
        writes=dict(writer.writes),
        failures=list(writer.failures),
        checks=checks,
        columns=columns,
        automatic_approvals=[a["detail"]["step"] for a in approvals if a["detail"].get("automatic")],
        history=store.history(NAME),
    )
    dispose_engines()
    return report
