"""``shiftover``: the command line. Commands parse, call one function, and report.

Configuration is read here, once: the control store URL comes from ``--control-url`` or
``SHIFTOVER_CONTROL_URL``; everything below receives typed objects.

Any URL may be a reference (``${NAME}``, ``file:...``, ``block:secret/...``): commands pass it on
as written and it is resolved only where a connection is made. A control store URL with an inline
password never becomes a flow parameter: from ``SHIFTOVER_CONTROL_URL`` the flow is handed the
reference ``${SHIFTOVER_CONTROL_URL}`` (it runs in this process), from ``--control-url`` it is refused.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer

# Without PREFECT_API_URL a flow run starts a temporary Prefect server. Its first start on a machine
# with no Prefect home runs the server's database migrations: 27 s measured here, against Prefect's
# 20 s default, so the README's first command failed on a bare machine. Set before Prefect is imported.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from shiftover.control.store import DEFAULT_URL
from shiftover.credentials import inline_password_problem, is_reference, register_resolver
from shiftover.errors import CredentialError, ShiftoverError

app = typer.Typer(
    help="Zero-downtime database migrations as Prefect workflows.", no_args_is_help=True, pretty_exceptions_enable=False
)


def _absolute(url: str) -> str:
    from shiftover.control.store import absolute_url

    if is_reference(url):
        return url
    try:
        return absolute_url(url)
    except (ShiftoverError, ValueError):  # not a URL Shiftover can open: the command says so when it opens it
        return url


ControlUrl = Annotated[
    str,
    typer.Option(
        "--control-url",
        envvar="SHIFTOVER_CONTROL_URL",
        help="Control store URL (SQLite file by default; a relative path is taken from here).",
        callback=_absolute,
    ),
]
SpecPath = Annotated[Path, typer.Argument(help="The migration's YAML spec.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of text.")]


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _terminal() -> bool:
    """Standard output is a terminal: people get rich trees and tables, pipes get plain text."""
    return sys.stdout.isatty()


def _console() -> Any:
    from rich.console import Console

    return Console()


_DEBUG = False
CONTROL_URL_VARIABLE = "SHIFTOVER_CONTROL_URL"


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on the terminal.")] = False,
) -> None:
    global _DEBUG
    _DEBUG = debug
    # block: references resolve through Prefect, imported only when one is used (check, status...
    # stay fast); a callback, so every command has it without a registration by import.
    register_resolver("block", _resolve_block)


def _resolve_block(name: str) -> str:
    from shiftover.flows.credentials import resolve_block

    return resolve_block(name)


def _flow_control_url(control_url: str) -> str:
    """What a flow run is given as ``control_url``: never a URL with an inline password."""
    if control_url == os.environ.get(CONTROL_URL_VARIABLE) and inline_password_problem(control_url, ""):
        return f"${{{CONTROL_URL_VARIABLE}}}"  # the flow runs in this process and resolves it here
    problem = inline_password_problem(control_url, "the flow run's parameters (served by the Prefect API)")
    if problem is not None:
        hint = f"; or export the URL as {CONTROL_URL_VARIABLE}, which the CLI hands to the flow by reference"
        raise CredentialError("--control-url", problem + hint)
    return control_url


def _fail(exc: Exception) -> None:
    if _DEBUG:
        import traceback

        traceback.print_exception(exc)
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


class _NoTraceback(logging.Formatter):
    """Formats like the formatter it wraps, without the traceback: the terminal gets one line per
    failure and the command's own ``error:`` line; Prefect's API logs keep the whole traceback."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def _quiet_tracebacks() -> None:
    """After Prefect has set up logging: its console handler prints no tracebacks (``--debug`` does)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    if _DEBUG:
        return
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.formatter, _NoTraceback):
                handler.setFormatter(_NoTraceback(handler.formatter))


def _choose_prefect_server() -> None:
    """Before Prefect is imported: use the configured server, else the project's long-lived one
    (``shiftover server start``), else say that this run starts a temporary one."""
    from shiftover.localserver import configured_api_url, use_running_server

    if configured_api_url():
        return
    server = use_running_server()
    if server is not None:
        typer.echo(f"Prefect server: {server.url} (shiftover server)", err=True)
    else:
        typer.echo(
            "Prefect server: a temporary one for this run only (its UI and pending approvals end with it); "
            "`shiftover server start` keeps one for the project, so runs start in seconds",
            err=True,
        )


@app.command()
def demo(
    rows: Annotated[
        int | None,
        typer.Option(help="Rows in the demo orders table [default: 100000; 5000 with --kind expand_contract]."),
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(help="Where the demo's databases live [default: .shiftover/demo; .shiftover/demo-expand]."),
    ] = None,
    requests_per_second: Annotated[float, typer.Option(help="Load on the example service.")] = 200.0,
    prepare_only: Annotated[bool, typer.Option(help="Only create the databases and the spec (for the UI).")] = False,
    with_routes: Annotated[
        bool,
        typer.Option(
            "--with-routes",
            help="After the table move, move GET /orders/<id> to the new service through HAProxy (needs haproxy).",
        ),
    ] = False,
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="table_move (default): move the table between two SQLite files; expand_contract: change "
            "orders.amount to amount_cents in place while an application keeps writing.",
        ),
    ] = "table_move",
) -> None:
    """Migrate a demo orders table between two SQLite files while the example service keeps serving."""
    if kind == "expand_contract":
        if with_routes:
            _fail(ShiftoverError("--with-routes goes with the table move, not --kind expand_contract"))
        return _expand_demo(5_000 if rows is None else rows, workdir or Path(".shiftover/demo-expand"), prepare_only)
    if kind != "table_move":
        _fail(ShiftoverError(f"--kind must be table_move or expand_contract, not {kind!r}"))
    rows = 100_000 if rows is None else rows
    workdir = workdir or Path(".shiftover/demo")
    from shiftover.demo.run import prepare, run_demo

    if prepare_only:
        spec_path, control = prepare(workdir, rows)
        typer.echo(f"demo databases ready; spec: {spec_path}; control store: {control} (reset)")
        return
    try:
        report = run_demo(
            rows=rows,
            workdir=workdir,
            requests_per_second=requests_per_second,
            watch=_terminal_bars,
            with_routes=with_routes,
        )
    except ShiftoverError as exc:
        _fail(exc)
    typer.echo(report.render())
    if report.final_differences != 0 or (report.routes is not None and report.routes.failures):
        raise typer.Exit(code=1)


def _expand_demo(rows: int, workdir: Path, prepare_only: bool) -> None:
    """``shiftover demo --kind expand_contract`` (``shiftover/demo/expand.py``)."""
    from shiftover.demo.expand import prepare_expand, run_expand_demo

    if prepare_only:
        spec_path, control = prepare_expand(workdir, rows)
        typer.echo(f"demo table ready; spec: {spec_path}; control store: {control} (reset)")
        return
    try:
        report = run_expand_demo(rows=rows, workdir=workdir)
    except ShiftoverError as exc:
        _fail(exc)
    typer.echo(report.render())
    if not report.ok:
        raise typer.Exit(code=1)


@app.command()
def plan(
    spec: SpecPath,
    ddl: Annotated[bool, typer.Option("--ddl", help="Also print the DDL Shiftover would run (reads schemas).")] = False,
    as_json: AsJson = False,
) -> None:
    """Print the stages, gates and approvals of a migration without touching any data."""
    from shiftover.plan import explain, explain_ddl, plan_data
    from shiftover.schema.spec import is_expand_contract_file
    from shiftover.spec import load_spec

    if is_expand_contract_file(spec):
        return _plan_schema_change(spec, as_json, ddl)
    try:
        if _is_route_spec(spec):  # kind: route: the route move's stages
            from shiftover.routes.plan import build_route_plan
            from shiftover.routes.spec import load_route_spec

            route_plan = build_route_plan(load_route_spec(spec))
            if as_json:
                _echo_json(route_plan.data())
            else:
                typer.echo(route_plan.explain())
            return
        loaded = load_spec(spec)
        if as_json:
            _echo_json({**plan_data(loaded), **({"ddl": explain_ddl(loaded)} if ddl else {})})
            return
        if _terminal():
            from shiftover.render import plan_tree

            _console().print(plan_tree(plan_data(loaded)))
        else:
            typer.echo(explain(loaded))
        if ddl:
            typer.echo(explain_ddl(loaded))
    except ShiftoverError as exc:
        _fail(exc)


def _is_route_spec(path: str | Path) -> bool:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False  # load_spec reports it
    return isinstance(data, dict) and data.get("kind") == "route"


def _plan_schema_change(spec: Path, as_json: bool, ddl: bool) -> None:
    """``plan`` for a ``kind: expand_contract`` spec: its stages, and with ``--ddl`` every statement
    each stage would run (read from the live table, which is not changed)."""
    from shiftover.schema.columns import planned_ddl
    from shiftover.schema.plan import explain_schema_change, schema_plan_data
    from shiftover.schema.preflight import open_checked_table
    from shiftover.schema.spec import load_expand_contract

    try:
        loaded = load_expand_contract(spec)
        statements = planned_ddl(open_checked_table(loaded)[0], loaded) if ddl else None
    except ShiftoverError as exc:
        _fail(exc)
    if as_json:
        _echo_json({**schema_plan_data(loaded), **({"ddl": statements} if statements is not None else {})})
        return
    typer.echo(explain_schema_change(loaded))
    for stage, sqls in (statements or {}).items():
        typer.echo(f"\n-- {stage}")
        typer.echo("\n".join(f"{s};" for s in sqls) or "-- (nothing)")


@app.command()
def check(spec: SpecPath, control_url: ControlUrl = DEFAULT_URL) -> None:
    """Check a spec against its live databases (tables, columns, keys), print the mapping, and rehearse
    the copy of a sample of rows (rolled back: nothing is written); every problem found is printed.
    A distributed backfill or diff with a SQLite control store is refused, as the run would refuse it.
    For an expand/contract spec: the run's own checks before its first DDL, every row's up computed
    (read only), and whether another unfinished change holds the table in the control store."""
    from shiftover.connect import get_engine
    from shiftover.control.segment_leases import require_distributed_store
    from shiftover.preflight import resolve_mapping, will_create_target
    from shiftover.rehearsal import rehearse
    from shiftover.schema.spec import is_expand_contract_file
    from shiftover.spec import load_spec

    if is_expand_contract_file(spec):
        return _check_schema_change(spec, control_url)
    try:
        loaded = load_spec(spec)
        for field_name, work in loaded.distributed_fields():  # the run refuses these before its first stage
            require_distributed_store(get_engine(control_url), field_name, what=work)
        created = will_create_target(loaded)
        mapping = resolve_mapping(loaded, require_target=not created)
        report = rehearse(loaded, mapping, get_engine(loaded.source.url), get_engine(loaded.target.url))
    except ShiftoverError as exc:
        _fail(exc)
    typer.echo(
        f"{'ok' if report.ok else 'FAILED'}: {mapping.source_table} -> {mapping.target_table}, key {list(mapping.key)}"
    )
    if created:
        typer.echo(
            f"  {mapping.target_table} does not exist yet: the dual-write stage creates it (`plan --ddl` shows it)"
        )
    for col in mapping.columns:
        typer.echo(f"  {col.sql or col.source} -> {col.target}")
    typer.echo(f"rehearsal: {report.rows} sample rows written and rolled back in {report.seconds:.2f} s")
    for note in report.notes:
        typer.echo(f"  note: {note}")
    for finding in report.findings:
        typer.secho(f"  {finding}", fg=typer.colors.RED, err=True)
    if not report.ok:
        typer.secho(f"{len(report.findings)} problem(s): a run stops before dual-write until they are fixed", err=True)
        raise typer.Exit(code=1)


def _check_schema_change(spec: Path, control_url: str) -> None:
    """``check`` for a ``kind: expand_contract`` spec. Nothing is written anywhere: the table is only
    read, and a control store that does not exist yet is not created (nothing can hold the table there).
    A change whose expand is done is past the checks that guard its first DDL: it gets its phase and
    next stage instead."""
    from shiftover.connect import redact
    from shiftover.control.store import existing_store
    from shiftover.plan import read_state
    from shiftover.schema.claim import changes_holding, table_identity
    from shiftover.schema.columns import new_columns
    from shiftover.schema.dry_run import check_ups_on_rows
    from shiftover.schema.plan import build_schema_plan
    from shiftover.schema.preflight import check_change, open_checked_table
    from shiftover.schema.spec import load_expand_contract

    where = f"control store {redact(control_url)}"
    try:
        loaded = load_expand_contract(spec)
        plan = build_schema_plan(loaded)
        store = existing_store(control_url)
        state = read_state(store, loaded.name) if store is not None and store.has_migration(loaded.name) else None
        if state is not None and plan.stages[0].done(state):
            target = open_checked_table(loaded)[0]
            pending = plan.pending(state)
            typer.echo(f"ok: {target.qualified}, key {list(target.key)} ({loaded.name})")
            typer.echo(
                f"  this change is at phase {state.phase.value} in the {where}: "
                + (f"`shiftover run` resumes at {pending[0].name}" if pending else "every stage is done")
            )
            return
        target = check_change(loaded)
        dry = check_ups_on_rows(target, loaded)
        holding = [] if store is None else changes_holding(store, table_identity(target), besides=loaded.name)
    except ShiftoverError as exc:
        _fail(exc)
    typer.echo(f"{'FAILED' if holding else 'ok'}: {target.qualified}, key {list(target.key)} ({loaded.name})")
    added = ", ".join(f"{name} {sql_type}" for name, sql_type, _ in new_columns(loaded))
    typer.echo(f"  expand adds, nullable: {added or '(no column)'}")
    typer.echo(f"  every up computed on {dry.rows} row(s) in {dry.batches} batch(es), read only: none failed")
    if store is None:
        typer.echo(f"  {where} does not exist yet: no change holds the table there")
    for name, held_at in holding:
        typer.secho(
            f"  table {target.qualified} is held by the unfinished change {name!r} (phase {held_at.value}): "
            "finish it or roll it back first",
            fg=typer.colors.RED,
            err=True,
        )
    if holding:
        raise typer.Exit(code=1)


@app.command()
def run(
    spec: SpecPath,
    control_url: ControlUrl = DEFAULT_URL,
    auto_approve: Annotated[bool, typer.Option(help="Answer approvals automatically (recorded as such).")] = False,
    stop_after: Annotated[
        str | None, typer.Option(help="Stop after this stage ('reads_10pct') or stage flow ('validate').")
    ] = None,
    restart: Annotated[bool, typer.Option(help="Start a rolled-back migration again from dual-write.")] = False,
    wait: Annotated[float, typer.Option(help="Seconds to wait for another run of it to finish.")] = 0.0,
) -> None:
    """Run the whole migration flow here, resuming where the control store says it stopped
    (approvals wait in the Prefect UI unless --auto-approve)."""
    from shiftover.control.store import open_store
    from shiftover.plan import build_plan, nothing_left
    from shiftover.schema.spec import is_expand_contract_file
    from shiftover.spec import load_spec

    if is_expand_contract_file(spec):
        return _run_schema_change(spec, control_url, auto_approve, stop_after, restart)
    try:
        loaded = load_spec(spec)
        build_plan(loaded).check_stop_after(stop_after)  # refuse bad input before a flow run starts
        flow_control_url = _flow_control_url(control_url)
        note = None if restart else nothing_left(loaded, open_store(control_url))
    except (ShiftoverError, ValueError) as exc:
        _fail(exc)
    if note:  # answered from the control store alone: no Prefect run is started
        typer.echo(note)
        return
    _choose_prefect_server()
    from shiftover.flows.migrate import migrate

    _quiet_tracebacks()

    try:
        with _terminal_bars(loaded, control_url):
            result = migrate(
                str(spec),
                flow_control_url,
                auto_approve=auto_approve,
                stop_after=stop_after,
                restart=restart,
                lease_wait_seconds=wait,
            )
    except (ShiftoverError, ValueError) as exc:
        _fail(exc)
    typer.echo(json.dumps(result, indent=2, default=str))


def _terminal_bars(spec: Any, control_url: str) -> AbstractContextManager[Any]:
    """``progress_for_run`` when Prefect's console is a terminal (call it after Prefect is imported)."""
    console = _prefect_log_console()
    if console is None or not console.is_terminal:
        return nullcontext()
    return progress_for_run(console, spec, control_url)


def _console_handlers() -> list[Any]:
    """Prefect's console log handlers, wherever logging's configuration attached them."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]
    found: list[Any] = []
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, PrefectConsoleHandler) and handler not in found:
                found.append(handler)
    return found


def _prefect_log_console() -> Any:
    """The rich Console Prefect's console log handler prints on (standard error), or None."""
    handlers = _console_handlers()
    return handlers[0].console if handlers else None


@contextmanager
def progress_for_run(console: Any, spec: Any, control_url: str) -> Iterator[Any]:
    """Progress bars for a run of ``spec`` on ``console``, read from its control store, with every
    Prefect console log handler printing through that same console while they are live: rich draws
    the log lines above the bars (two consoles writing to one terminal garble each other)."""
    from shiftover.control.store import open_store, utcnow
    from shiftover.plan import ValidateStage, build_plan
    from shiftover.progress import RunBars, read_progress, watch_run

    store = open_store(control_url).engine
    since = utcnow()
    gates = sum(len(s.gates) for s in build_plan(spec).stages if isinstance(s, ValidateStage))
    bars = RunBars(console, source_rows=lambda: _source_estimate(spec), validate_gates=gates)
    handlers = _console_handlers()
    kept = [h.console for h in handlers]
    for handler in handlers:
        handler.console = console
    try:
        with watch_run(bars, lambda: read_progress(store, spec.name, since)):
            yield bars
    finally:
        for handler, own in zip(handlers, kept, strict=True):
            handler.console = own


def _source_estimate(spec: Any) -> int:
    """The source's row estimate (the engine's statistics where it keeps them, else a count)."""
    from shiftover.backfill.keyset import estimate_rows
    from shiftover.connect import get_engine
    from shiftover.preflight import resolve_mapping

    mapping = resolve_mapping(spec, require_target=False)
    engine = get_engine(spec.source.url)
    return estimate_rows(engine, mapping.source_table_obj(engine))


def _run_schema_change(spec: Path, control_url: str, auto_approve: bool, stop_after: str | None, restart: bool) -> None:
    """``run`` for a ``kind: expand_contract`` spec: the expand-contract flow."""
    from shiftover.schema.plan import build_schema_plan
    from shiftover.schema.spec import load_expand_contract

    try:
        build_schema_plan(load_expand_contract(spec)).check_stop_after(stop_after)
        flow_control_url = _flow_control_url(control_url)
    except (ShiftoverError, ValueError) as exc:
        _fail(exc)
    _choose_prefect_server()
    from shiftover.flows.expand import expand_contract

    _quiet_tracebacks()
    try:
        result = expand_contract(
            str(spec), flow_control_url, auto_approve=auto_approve, stop_after=stop_after, restart=restart
        )
    except (ShiftoverError, ValueError) as exc:
        _fail(exc)
    typer.echo(json.dumps(result, indent=2, default=str))


@app.command()
def status(
    name: Annotated[str | None, typer.Argument(help="Migration name; all migrations when omitted.")] = None,
    control_url: ControlUrl = DEFAULT_URL,
    history: Annotated[bool, typer.Option("--history", help="The whole audit log, not the last phases.")] = False,
    as_json: AsJson = False,
) -> None:
    """Phase, routing, who holds it, pending approvals, progress and last gate results of a migration."""
    from shiftover.status import render_status, status_data

    try:
        if as_json:
            _echo_json(status_data(control_url, name, history=history))
        elif _terminal():
            from shiftover.render import status_view

            _console().print(status_view(status_data(control_url, name, history=history)))
        else:
            typer.echo(render_status(control_url, name, history=history))
    except ShiftoverError as exc:
        _fail(exc)


KeyDir = Annotated[
    Path,
    typer.Option(
        "--key-dir",
        envvar="SHIFTOVER_KEY_DIR",
        help="Where approvers' private keys live (NAME.pem).",
    ),
]
KeyFile = Annotated[Path | None, typer.Option("--key", help="The approver's private key file (else KEY_DIR/NAME.pem).")]
_DEFAULT_KEY_DIR = Path("~/.config/shiftover/approvers")


@app.command()
def approve(
    flow_run_id: Annotated[str, typer.Argument(help="The paused flow run's id (shown in the Prefect UI).")],
    approver: Annotated[str, typer.Option(help="Who approves.")],
    confirm_name: Annotated[str, typer.Option("--confirm-name", help="The migration's name, typed to confirm.")],
    reason: Annotated[str, typer.Option(help="Why it is safe (recorded, not signed).")] = "",
    reject: Annotated[bool, typer.Option(help="Reject instead: the run stops in its last safe phase.")] = False,
    key: KeyFile = None,
    key_dir: KeyDir = _DEFAULT_KEY_DIR,
    signature: Annotated[
        str | None, typer.Option(help="A signature made elsewhere with `shiftover sign` (no key needed here).")
    ] = None,
    control_url: ControlUrl = DEFAULT_URL,
) -> None:
    """Answer a paused run's approval from the terminal (needs PREFECT_API_URL).

    With a key (--key, or NAME.pem in the key dir) the answer is signed: the question it answers
    (migration, step, epoch, attempt) is read from the control store's pending request of that run."""
    from uuid import UUID

    from shiftover.localserver import use_running_server

    decision = "reject" if reject else "approve"
    key_path = key if key is not None else _found_key(key_dir, approver)
    if signature is None and key_path is not None:
        try:
            signature = _sign_pending(flow_run_id, approver, confirm_name, decision, key_path, control_url, key)
        except ShiftoverError as exc:
            _fail(exc)
    use_running_server()
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        _fail(
            ShiftoverError(
                "no Prefect server to answer: start the project's with `shiftover server start` and run the "
                "migration against it, or set PREFECT_API_URL to the server the paused run uses (e.g. "
                "http://127.0.0.1:4200/api). A run started by `shiftover run` with neither uses a temporary "
                "server that only lives inside that run"
            )
        )
    from prefect.flow_runs import resume_flow_run

    payload: dict[str, Any] = {
        "approver": approver,
        "confirm_name": confirm_name,
        "reason": reason,
        "decision": decision,
    }
    if signature is not None:
        payload["signature"] = signature
    try:
        resume_flow_run(UUID(flow_run_id), run_input=payload)
    except Exception as exc:
        _fail(ShiftoverError(f"{type(exc).__name__}: {exc}" if str(exc) not in ("", "None") else type(exc).__name__))
    typer.echo(f"{'rejected' if reject else 'approved'}: flow run {flow_run_id}")


def _found_key(key_dir: Path, approver: str) -> Path | None:
    from shiftover.signing import key_file

    path = key_file(key_dir, approver.strip())
    return path if approver.strip() and path.is_file() else None


def _sign_pending(
    run_id: str, approver: str, confirm_name: str, decision: str, key: Path, control_url: str, asked: Path | None
) -> str | None:
    """Sign the question the run waits on, as the control store holds it (the flow verifies against
    the same request), after checking that it is the migration the approver typed. A key found in
    the key directory (not ``asked`` for) signs only when the store holds the question: otherwise
    the answer goes unsigned, as it did before keys (a spec with keys has the server refuse it)."""
    from shiftover.approvals import challenge_of, pending_request_of
    from shiftover.control.store import open_store
    from shiftover.errors import ApprovalError
    from shiftover.signing import fingerprint, load_private_key, public_key_text, sign_approval

    private = load_private_key(key)
    from shiftover.connect import redact

    store = open_store(control_url, create=False)  # an empty store stays empty: it holds no request
    request = pending_request_of(store.engine, f"flow-run/{run_id}") if store.revision() is not None else None
    if request is None and asked is None:
        typer.echo(f"not signed: no pending approval for flow run {run_id} in {redact(control_url)}", err=True)
        return None
    if request is None:
        raise ApprovalError(
            f"no pending approval for flow run {run_id} in the control store {redact(control_url)}: pass the store the "
            "run uses (--control-url or SHIFTOVER_CONTROL_URL), or sign with `shiftover sign` and pass --signature"
        )
    if confirm_name.strip() != request.migration:
        raise ApprovalError(
            f"flow run {run_id} waits for approval of {request.step!r} in {request.migration!r}, "
            f"not {confirm_name.strip()!r}; nothing was signed"
        )
    challenge = challenge_of(request)
    signed = sign_approval(private, challenge, decision, approver.strip())
    fp = fingerprint(public_key_text(private.public_key()))
    typer.echo(
        f"signed: {decision} of {challenge.step} in {challenge.migration} at epoch {challenge.epoch}, "
        f"attempt {challenge.attempt}, as {approver.strip()} (key {fp})",
        err=True,
    )
    return signed


@app.command()
def keygen(
    name: Annotated[str, typer.Argument(help="The approver's name, as listed in the spec's approvals.approvers.")],
    key_dir: KeyDir = _DEFAULT_KEY_DIR,
) -> None:
    """Create NAME's signing key (KEY_DIR/NAME.pem, mode 0600) and print the public key for the spec."""
    import re

    from shiftover.signing import NAME_PATTERN, generate_key, key_file, write_private_key

    if not re.match(NAME_PATTERN, name):
        _fail(ShiftoverError(f"approver name {name!r} must be letters, digits and . _ @ - (it names the key file)"))
    path = key_file(key_dir, name)
    pem, public = generate_key()
    try:
        write_private_key(path, pem)
    except FileExistsError:
        _fail(ShiftoverError(f"{path} exists: a key is never overwritten (move it away first to replace it)"))
    typer.echo(f"private key: {path} (keep it to yourself; mode 0600)", err=True)
    typer.echo("add to the spec's approvals.keys:", err=True)
    typer.echo(f'{name}: "{public}"')


@app.command()
def sign(
    approver: Annotated[str, typer.Option(help="Who signs (the name submitted in the form).")],
    migration: Annotated[str, typer.Option(help="The migration's name.")],
    step: Annotated[str, typer.Option(help="The step waiting for approval (in the form's description).")],
    epoch: Annotated[int, typer.Option(help="The request's epoch (in the form's description).")],
    attempt: Annotated[int, typer.Option(help="The request's attempt (in the form's description).")],
    reject: Annotated[bool, typer.Option(help="Sign a rejection instead of an approval.")] = False,
    key: KeyFile = None,
    key_dir: KeyDir = _DEFAULT_KEY_DIR,
) -> None:
    """Print the signature of an answer, to paste into the Resume form's Signature field."""
    from shiftover.signing import Challenge, key_file, load_private_key, sign_approval

    try:
        private = load_private_key(key if key is not None else key_file(key_dir, approver))
        signature = sign_approval(
            private, Challenge(migration, step, epoch, attempt), "reject" if reject else "approve", approver
        )
    except (ShiftoverError, ValueError) as exc:
        _fail(exc)
    # said on stderr so the approver reads what they sign (a form's text is not proof of what is asked)
    decision = "a rejection" if reject else "an approval"
    typer.echo(
        f"signed {decision} of {step} in {migration} at epoch {epoch}, attempt {attempt}, as {approver}", err=True
    )
    typer.echo(signature)


@app.command()
def rollback(
    spec: SpecPath,
    reason: Annotated[str, typer.Option(help="Why (goes to the audit log).")] = "manual rollback from the CLI",
    control_url: ControlUrl = DEFAULT_URL,
) -> None:
    """Return reads and writes to the old store now (any phase before the old store stops being written).
    For an expand/contract spec: drop the sync triggers and new columns (any phase before stop_sync)."""
    from shiftover.schema.spec import is_expand_contract_file

    _choose_prefect_server()
    if is_expand_contract_file(spec):
        from shiftover.flows.expand import expand_contract_rollback

        _quiet_tracebacks()
        try:
            result = expand_contract_rollback(str(spec), _flow_control_url(control_url), reason=reason)
        except ShiftoverError as exc:
            _fail(exc)
        typer.echo(json.dumps(result, default=str))
        return
    from shiftover.flows.rollback import rollback as rollback_flow

    _quiet_tracebacks()

    try:
        result = rollback_flow(str(spec), _flow_control_url(control_url), reason=reason)
    except ShiftoverError as exc:
        _fail(exc)
    typer.echo(json.dumps(result, default=str))


@app.command()
def gateway(
    spec: Annotated[Path, typer.Argument(help="The route move's spec (kind: route).")],
    workdir: Annotated[
        Path,
        typer.Option(
            "--dir", help="Where the gateway keeps its config, sockets and logs: the route-move flow's gateway_dir."
        ),
    ] = Path(".shiftover/gateway"),
) -> None:
    """Run the route move's gateway in the foreground (HAProxy, or nginx with gateway.driver: nginx),
    on gateway.listen, every route on the old upstream, until Ctrl-C or SIGTERM; the route-move and
    route-rollback flows drive it through --dir. Run it as a service in front of the monolith."""
    import signal
    import threading

    from shiftover.routes.drivers import attach_gateway, start_gateway
    from shiftover.routes.spec import load_route_spec

    try:
        loaded = load_route_spec(spec)
    except ShiftoverError as exc:
        _fail(exc)
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        attach_gateway(loaded, workdir)
    except ShiftoverError:
        pass  # nothing runs from there: start one
    else:
        _fail(ShiftoverError(f"a gateway already runs from {workdir}: stop it first, or give another --dir"))
    try:
        running = start_gateway(loaded, workdir=workdir, log_socket=workdir / "log.sock")
    except ShiftoverError as exc:
        _fail(exc)
    listen = loaded.gateway.listen or f"127.0.0.1:{running.port}"
    typer.echo(
        f"{loaded.gateway.driver} for route move {loaded.name} listening on {listen}, every route on the old "
        f"upstream {loaded.old.address}; the route-move flow drives it with gateway_dir={workdir}. Ctrl-C stops it.",
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    process = running.process
    try:
        while not stop.is_set() and (process is None or process.poll() is None):
            stop.wait(0.5)
    except KeyboardInterrupt:
        stop.set()
    finally:
        running.stop()
    if not stop.is_set():
        _fail(ShiftoverError(f"the gateway ended by itself: see {workdir}"))
    typer.echo("gateway stopped")


server_app = typer.Typer(help="The project's long-lived local Prefect server (UI included).", no_args_is_help=True)
app.add_typer(server_app, name="server")


@server_app.command("start")
def server_start(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 4200,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Start a Prefect server for this project (or find the running one); later commands use it."""
    from shiftover.localserver import start

    try:
        server, started = start(host=host, port=port)
    except ShiftoverError as exc:
        _fail(exc)
    typer.echo(f"{'started' if started else 'already running'}: {server.url} (UI), pid {server.pid}, log {server.log}")
    typer.echo(f"shiftover run/approve use it from here; other tools: export PREFECT_API_URL={server.api_url}")


@server_app.command("status")
def server_status() -> None:
    """Whether the project's Prefect server runs, and where."""
    from shiftover.localserver import find_running

    server = find_running()
    if server is None:
        typer.echo("not running (start it with `shiftover server start`)")
        raise typer.Exit(code=1)
    typer.echo(f"running: {server.url} (UI), pid {server.pid}, log {server.log}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the project's Prefect server."""
    from shiftover.localserver import stop

    server = stop()
    typer.echo(f"stopped: {server.url}" if server else "not running")


control_app = typer.Typer(help="The control store itself.", no_args_is_help=True)
app.add_typer(control_app, name="control")


@control_app.command("upgrade")
def control_upgrade(control_url: ControlUrl = DEFAULT_URL) -> None:
    """Create the control store's schema, or bring it to this Shiftover's revision (stop its flows first)."""
    from shiftover.connect import get_engine
    from shiftover.control.store import ControlStore, head_revision

    try:
        store = ControlStore(get_engine(control_url))
        before = store.revision()
        store.upgrade()
    except ShiftoverError as exc:
        _fail(exc)
    typer.echo(f"control store {store.url}: {before or 'empty'} -> {head_revision()}")


@app.command()
def throttle(
    name: Annotated[str, typer.Argument(help="Migration name.")],
    pause: Annotated[bool, typer.Option("--pause", help="Pause the running backfill (it writes nothing).")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Resume a paused backfill.")] = False,
    max_rows_per_second: Annotated[float | None, typer.Option(help="Rows/s cap; 0 removes it.")] = None,
    chunk_rows: Annotated[int | None, typer.Option(help="Rows per chunk.")] = None,
    nice_ratio: Annotated[
        float | None, typer.Option(help="Rest after each chunk this many times its duration; 0 removes the rest.")
    ] = None,
    control_url: ControlUrl = DEFAULT_URL,
) -> None:
    """Pause, resume or retune a running backfill without restarting it."""
    from shiftover.backfill.throttle import set_throttle
    from shiftover.connect import redact
    from shiftover.control.store import store_knowing
    from shiftover.errors import UnknownMigrationError

    if pause and resume:
        _fail(ValueError("--pause and --resume contradict each other"))
    paused = True if pause else (False if resume else None)
    try:
        store = store_knowing(control_url, name)  # none there: nothing is created
        if store is None:  # a typo'd name would throttle nothing, silently
            starts = "Start it with `shiftover run SPEC` (the 'migrate' or 'expand-contract' flow registers it)"
            raise UnknownMigrationError(name, redact(control_url), "`shiftover throttle`", starts)
        value = set_throttle(
            store.engine,
            name,
            paused=paused,
            max_rows_per_second=max_rows_per_second,
            chunk_rows=chunk_rows,
            nice_ratio=nice_ratio,
            actor="cli",
        )
    except (ShiftoverError, ValueError) as exc:
        _fail(exc)
    typer.echo(f"backfill throttle of {name}: {json.dumps(value)}")


@app.command()
def reconcile(spec: SpecPath, control_url: ControlUrl = DEFAULT_URL) -> None:
    """Drain the reconciliation queue now (keys the secondary store missed)."""
    _choose_prefect_server()
    from shiftover.flows.reconcile import reconcile as reconcile_flow

    _quiet_tracebacks()

    try:
        result = reconcile_flow(str(spec), _flow_control_url(control_url))
    except ShiftoverError as exc:
        _fail(exc)
    typer.echo(json.dumps(result, default=str))


if __name__ == "__main__":  # pragma: no cover
    app()
