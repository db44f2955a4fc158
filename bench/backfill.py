"""Backfill benchmark: the COPY ceiling, Shiftover's PG → PG flow, an executemany baseline,
Shiftover's MariaDB → PG, and peak memory at two sizes, all measured in the same run.

    .venv/bin/python bench/backfill.py --rows 2000000

Builds its own 7-column ``orders`` tables with generate_series / the MariaDB sequence engine
in databases it creates and drops. Prints times, rows/s and the ratios the issue asks for.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # a cold or loaded machine
os.environ.setdefault("DO_NOT_TRACK", "1")
sys.path.insert(0, str(ROOT))

PG_ADMIN = os.environ.get("SHIFTOVER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MARIADB_ADMIN = os.environ.get("SHIFTOVER_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/mysql")

PG_DDL = (
    "CREATE TABLE {name} (id bigint PRIMARY KEY, customer_id bigint NOT NULL, "
    "amount numeric(12,2) NOT NULL, status varchar(20) NOT NULL, note text, "
    "created_at timestamp NOT NULL, updated_at timestamp NOT NULL)"
)
MARIADB_DDL = (
    "CREATE TABLE {name} (id bigint PRIMARY KEY, customer_id bigint NOT NULL, "
    "amount decimal(12,2) NOT NULL, status varchar(20) NOT NULL, note text, "
    "created_at datetime(6) NOT NULL, updated_at datetime(6) NOT NULL)"
)
PG_FILL = (
    "INSERT INTO {name} SELECT g, g % 50000, (g % 1000000) / 100.0, "
    "(ARRAY['new','paid','shipped','delivered','cancelled'])[1 + g % 5], "
    "CASE WHEN g % 10 < 3 THEN NULL ELSE 'note ' || (g::bigint * 7919 % 1000000) END, "
    "timestamp '2024-01-01' + g * interval '7 seconds', "
    "timestamp '2024-01-01' + g * interval '7 seconds' + (g % 600) * interval '1 minute' "
    "FROM generate_series(1, {rows}) AS g"
)
MARIADB_FILL = (
    "INSERT INTO {name} SELECT seq, seq % 50000, (seq % 1000000) / 100.0, "
    "ELT(1 + seq % 5, 'new','paid','shipped','delivered','cancelled'), "
    "IF(seq % 10 < 3, NULL, CONCAT('note ', seq * 7919 % 1000000)), "
    "TIMESTAMP('2024-01-01') + INTERVAL seq * 7 SECOND, "
    "TIMESTAMP('2024-01-01') + INTERVAL seq * 7 SECOND + INTERVAL seq % 600 MINUTE "
    "FROM seq_1_to_{rows}"
)


class Databases:
    """Throwaway databases on both servers, dropped on exit."""

    def __init__(self) -> None:
        self.pg_admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        self.my_admin = sa.create_engine(MARIADB_ADMIN, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        self.created: list[tuple[sa.Engine, str]] = []

    def make(self, admin: sa.Engine, admin_url: str) -> str:
        name = f"so_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        self.created.append((admin, name))
        return sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)

    def pg(self) -> str:
        return self.make(self.pg_admin, PG_ADMIN)

    def mariadb(self) -> str:
        return self.make(self.my_admin, MARIADB_ADMIN)

    def drop_all(self) -> None:
        from shiftover.connect import dispose_engines

        dispose_engines()
        for admin, name in self.created:
            with admin.connect() as conn:
                suffix = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}{suffix}"))


def run(url: str, *statements: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))
    engine.dispose()


def vacuum(url: str, table: str = "orders") -> None:
    """A live table has been vacuumed (hint bits, visibility map): both the ceiling and the backfill read it so."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"VACUUM ANALYZE {table}"))
    engine.dispose()


def scalar(url: str, query: str) -> Any:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        value = conn.execute(sa.text(query)).scalar()
    engine.dispose()
    return value


def pg_fingerprint(url: str, table: str = "orders") -> tuple[int, str]:
    return scalar(url, f"SELECT count(*) FROM {table}"), scalar(
        url, f"SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM {table} t"
    )


# -- the measurements --------------------------------------------------------------------
def copy_ceiling(source: str, target: str) -> float:
    """``COPY orders TO STDOUT | COPY orders FROM STDIN``, block by block, one stream."""
    import psycopg

    def conninfo(url: str) -> str:
        u = sa.make_url(url)
        return f"host={u.host} port={u.port or 5432} user={u.username} dbname={u.database}"

    began = time.perf_counter()
    with (
        psycopg.connect(conninfo(source)) as src,
        psycopg.connect(conninfo(target)) as dst,
        src.cursor().copy("COPY orders TO STDOUT") as out,
        dst.cursor().copy("COPY orders FROM STDIN") as inp,
    ):
        for block in out:
            inp.write(block)
    return time.perf_counter() - began


def executemany_baseline(source: str, target: str, rows: int) -> float:
    """SQLAlchemy reads chunks from MariaDB and ``conn.execute(insert, rows)`` writes them to PostgreSQL."""
    src = sa.create_engine(source, poolclass=sa.pool.NullPool)
    dst = sa.create_engine(target, poolclass=sa.pool.NullPool)
    table = sa.Table("orders", sa.MetaData(), autoload_with=dst)
    began = time.perf_counter()
    last = 0
    with src.connect() as s, dst.begin() as d:
        while last < rows:
            batch = [
                dict(r._mapping)
                for r in s.execute(
                    sa.text("SELECT * FROM orders WHERE id > :last ORDER BY id LIMIT 10000"), {"last": last}
                )
            ]
            if not batch:
                break
            d.execute(table.insert(), batch)
            last = batch[-1]["id"]
    seconds = time.perf_counter() - began
    src.dispose()
    dst.dispose()
    return seconds


def write_spec(path: Path, name: str, source: str, target: str, concurrency: int, chunk_rows: int) -> str:
    spec = {
        "name": name,
        "source": {"url": source, "table": "orders"},
        "target": {"url": target, "table": "orders"},
        "key": "id",
        "backfill": {"concurrency": concurrency, "chunk_rows": chunk_rows},
    }
    path.write_text(json.dumps(spec))  # JSON is YAML
    return str(path)


def flow_backfill(spec_path: str, control_url: str) -> tuple[float, dict[str, Any]]:
    """Shiftover's backfill through the real flow: Prefect, checkpoints and progress included."""
    from shiftover.control.store import open_store
    from shiftover.flows.backfill import backfill
    from shiftover.phases import Phase
    from shiftover.spec import load_spec

    name = load_spec(spec_path).name
    store = open_store(control_url)
    store.register(name, {})
    store.transition(name, Phase.DUAL_WRITING, "bench")
    began = time.perf_counter()
    summary = backfill(spec_path, control_url)
    return time.perf_counter() - began, summary


def warm_up(dbs: Databases, tmp: Path, control: str) -> None:
    source, target = dbs.pg(), dbs.pg()
    run(source, PG_DDL.format(name="orders"), PG_FILL.format(name="orders", rows=1000))
    run(target, PG_DDL.format(name="orders"))
    flow_backfill(write_spec(tmp / "warm.yaml", "bench-warm-up", source, target, 1, 500), control)


def child_rss(spec_path: str, control_url: str) -> tuple[float, int]:
    """Run the plain backfill in a fresh process; its seconds and peak RSS (MB)."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", spec_path, control_url],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["seconds"], result["peak_rss_mb"]


def child_main(spec_path: str, control_url: str) -> None:
    from shiftover.backfill import run_backfill
    from shiftover.migration import load_migration

    migration = load_migration(spec_path, control_url)
    began = time.perf_counter()
    summary = run_backfill(migration)
    seconds = time.perf_counter() - began
    assert summary.complete
    # VmHWM, not ru_maxrss: ru_maxrss keeps the parent's high-water mark across fork + exec.
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
    peak = int(hwm.split()[1]) / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": round(peak, 1)}))


# -- the run -----------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--small-rows", type=int, default=200_000, help="the smaller size for the RSS comparison")
    parser.add_argument("--baseline-rows", type=int, default=400_000, help="rows for the executemany baseline")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(*args.child)
        return 0
    small = min(args.small_rows, args.rows)
    dbs = Databases()
    tmp = Path(tempfile.mkdtemp(prefix="so_bench_"))
    try:
        return measure(args, small, dbs, tmp)
    finally:
        dbs.drop_all()


def measure(args: argparse.Namespace, small: int, dbs: Databases, tmp: Path) -> int:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_LOGGING_LEVEL, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    rows = args.rows
    print(f"building orders tables ({rows:,} rows) ...", flush=True)
    pg_old, pg_ceiling, pg_new, pg_from_my, pg_base = dbs.pg(), dbs.pg(), dbs.pg(), dbs.pg(), dbs.pg()
    my_old = dbs.mariadb()
    run(pg_old, PG_DDL.format(name="orders"), PG_FILL.format(name="orders", rows=rows))
    vacuum(pg_old)
    for url in (pg_ceiling, pg_new, pg_from_my, pg_base):
        run(url, PG_DDL.format(name="orders"))
    run(my_old, MARIADB_DDL.format(name="orders"), MARIADB_FILL.format(name="orders", rows=rows))

    ceilings = [copy_ceiling(pg_old, pg_ceiling)]
    base_rows = min(args.baseline_rows, rows)
    baseline = executemany_baseline(my_old, pg_base, base_rows)

    with (
        prefect_test_harness(server_startup_timeout=180),
        temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_LOGGING_LEVEL: "WARNING"}),
    ):
        control = f"sqlite:///{tmp}/control.db"
        warm_up(dbs, tmp, control)  # the first flow run in a process pays Prefect's and SQLAlchemy's set-up
        pg_spec = write_spec(tmp / "pg.yaml", "bench-pg", pg_old, pg_new, args.concurrency, args.chunk_rows)
        pg_seconds, pg_summary = flow_backfill(pg_spec, control)
        my_spec = write_spec(tmp / "my.yaml", "bench-my", my_old, pg_from_my, args.concurrency, args.chunk_rows)
        my_seconds, my_summary = flow_backfill(my_spec, control)
    assert pg_summary["complete"] and my_summary["complete"]
    run(pg_ceiling, "TRUNCATE orders")
    ceilings.append(copy_ceiling(pg_old, pg_ceiling))  # again after the flow: the faster one is the ceiling
    ceiling = min(ceilings)
    zero_diff = pg_fingerprint(pg_old) == pg_fingerprint(pg_new) == pg_fingerprint(pg_from_my)

    rss = rss_runs(dbs, tmp, args, small, {"pg": pg_old, "my": my_old})
    report(rows, ceiling, pg_seconds, base_rows, baseline, my_seconds, zero_diff, rss, small)
    return 0 if zero_diff else 1


def rss_runs(
    dbs: Databases, tmp: Path, args: argparse.Namespace, small: int, full: dict[str, str]
) -> dict[str, tuple[float, int]]:
    """Peak RSS of fresh backfill processes (no Prefect) at the small size and the full size.

    ``full`` holds the full-size sources of the timed runs (read-only there), copied again here."""
    out: dict[str, tuple[float, int]] = {}
    sources = {"pg": dbs.pg(), "my": dbs.mariadb()}
    run(sources["pg"], PG_DDL.format(name="orders"), PG_FILL.format(name="orders", rows=small))
    run(sources["my"], MARIADB_DDL.format(name="orders"), MARIADB_FILL.format(name="orders", rows=small))
    for label, source in (
        ("pg-small", sources["pg"]),
        ("my-small", sources["my"]),
        ("pg-full", full["pg"]),
        ("my-full", full["my"]),
    ):
        target = dbs.pg()
        run(target, PG_DDL.format(name="orders"))
        spec = write_spec(tmp / f"{label}.yaml", f"rss-{label}", source, target, args.concurrency, args.chunk_rows)
        out[label] = child_rss(spec, f"sqlite:///{tmp}/control-{label}.db")
    return out


def report(
    rows: int,
    ceiling: float,
    pg_seconds: float,
    base_rows: int,
    baseline: float,
    my_seconds: float,
    zero_diff: bool,
    rss: dict[str, tuple[float, int]],
    small: int,
) -> None:
    def line(name: str, seconds: float, n: int) -> str:
        return f"  {name:<46} {seconds:8.2f} s  {n / seconds:>12,.0f} rows/s"

    print(f"\norders: {rows:,} rows, 7 columns")
    print(line("COPY TO | COPY FROM (ceiling, PG -> PG, best of 2)", ceiling, rows))
    print(line("Shiftover flow PG -> PG (after a warm-up run)", pg_seconds, rows))
    print(line(f"SQLAlchemy executemany MariaDB -> PG ({base_rows:,})", baseline, base_rows))
    print(line("Shiftover flow MariaDB -> PG", my_seconds, rows))
    print(f"  zero diff (count + md5 of every row, both targets): {zero_diff}")
    pg_ratio = ceiling / pg_seconds
    my_ratio = (rows / my_seconds) / (base_rows / baseline)
    print(f"\nPG -> PG vs COPY ceiling:             {pg_ratio:.2f}  (target >= 0.80)")
    print(f"MariaDB -> PG vs executemany (rows/s): {my_ratio:.2f}  (target >= 2.00)")
    print("peak RSS of a backfill process (MB):")
    for engine in ("pg", "my"):
        (_, s_rss), (_, f_rss) = rss[f"{engine}-small"], rss[f"{engine}-full"]
        name = "PG -> PG" if engine == "pg" else "MariaDB -> PG"
        print(
            f"  {name:<14} {small:>10,} rows: {s_rss:6.0f}   {rows:>10,} rows: {f_rss:6.0f}   "
            f"growth {f_rss / s_rss:.2f}x  (target < 300 MB, flat)"
        )
    figures = {
        "rows": rows,
        "pg_pg_vs_copy_ceiling": round(pg_ratio, 3),
        "mariadb_pg_vs_executemany": round(my_ratio, 3),
        "pg_pg_rows_per_s": round(rows / pg_seconds),
        "mariadb_pg_rows_per_s": round(rows / my_seconds),
        "zero_diff": zero_diff,
        "peak_rss_mb": {k: round(v[1]) for k, v in sorted(rss.items())},
    }
    print(json.dumps(figures))  # the last line: every figure, for scripts


if __name__ == "__main__":
    raise SystemExit(main())
