"""Great Expectations suites run inside the target database (never through pandas).

GX costs about 3 s and 240 MB to import, so it is imported inside ``run_expectations``
only: flows that run no GX gate never pay for it. Each run uses a fresh ephemeral context
(no files, no Data Docs). The default suite, which the expectations gate adds to the declared
ones, checks the key (unique, not null) and the row count against the source's (a run-time
``$PARAMETER``); the gate answers it in plain SQL (``shiftover.default_checks``) and hands GX
only the declared expectations.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from shiftover.engines import dialect_for
from shiftover.errors import DiffError
from shiftover.spec import Expectation


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict, summarised for reports (plain values only)."""

    type: str
    kwargs: dict[str, Any]
    severity: str  # blocking | warning
    success: bool
    observed: str = ""  # observed value or unexpected count
    sample: list[str] = field(default_factory=list)  # a few unexpected values
    error: str = ""  # an exception GX caught (e.g. a missing column)
    checked_by: str = "great_expectations"  # or "sql": the default suite (shiftover.default_checks)

    def as_row(self) -> dict[str, Any]:
        return {
            "expectation": self.type,
            "kwargs": _short(self.kwargs),
            "severity": self.severity,
            "success": self.success,
            "observed": self.observed,
            "sample": ", ".join(self.sample[:5]),
            "error": self.error[:200],
            "checked_by": self.checked_by,
        }


def _short(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items())[:200]


def default_suite(key: Sequence[str]) -> list[Expectation]:
    """Key unique (compound when composite), key columns not null, row count equal to the source."""
    suite = []
    if len(key) == 1:
        suite.append(Expectation(type="expect_column_values_to_be_unique", kwargs={"column": key[0]}))
    else:
        suite.append(Expectation(type="expect_compound_columns_to_be_unique", kwargs={"column_list": list(key)}))
    suite += [Expectation(type="expect_column_values_to_not_be_null", kwargs={"column": k}) for k in key]
    suite.append(Expectation(type="expect_table_row_count_to_equal", kwargs={"value": {"$PARAMETER": "source_rows"}}))
    return suite


_preloading: threading.Thread | None = None


def preload_great_expectations() -> None:
    """Import GX in a background thread (once per process), so that a stage whose gates run declared
    expectations does not wait the 3 s import at its expectations gate: it overlaps the stage's work
    and the gates before it. ``run_expectations`` waits for it to finish."""
    global _preloading
    if _preloading is None and "great_expectations" not in sys.modules:
        _preloading = threading.Thread(target=_import_quietly, name="shiftover-gx-preload", daemon=True)
        _preloading.start()


def _import_quietly() -> None:
    try:
        import great_expectations  # noqa: F401
    except Exception:  # the gate imports it again, in its own thread, and reports the error there
        pass


def _await_preload() -> None:
    if _preloading is not None:
        _preloading.join()


def expectation_class(name: str) -> Any:
    """The GX class for a snake_case name, or DiffError listing how to spell it."""
    _await_preload()
    import great_expectations as gx

    camel = "".join(part.capitalize() for part in name.split("_"))
    cls = getattr(gx.expectations, camel, None)
    if cls is None:
        raise DiffError(
            f"unknown expectation {name!r}; use a Great Expectations snake_case name such as "
            "expect_column_values_to_not_be_null or expect_column_values_to_be_between"
        )
    return cls


def build_expectations(expectations: Sequence[Expectation]) -> list[Any]:
    """The GX expectation objects, all built before any query: a bad name or argument fails first."""
    built = []
    for exp in expectations:
        try:
            built.append(expectation_class(exp.type)(**exp.kwargs))
        except DiffError:
            raise
        except Exception as exc:
            raise DiffError(f"expectation {exp.type!r} with {exp.kwargs}: {exc}".splitlines()[0]) from None
    return built


def run_expectations(
    engine: Engine,
    table: str,
    expectations: Sequence[Expectation],
    *,
    schema: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> list[ExpectationOutcome]:
    """Run the expectations against ``table`` inside its database; one outcome per expectation."""
    _await_preload()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    built = build_expectations(expectations)
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = _datasource(ctx, engine).add_table_asset(name="target", table_name=table, schema_name=schema)
    batch = asset.add_batch_definition_whole_table("whole table")
    suite = ctx.suites.add(gx.ExpectationSuite(name="shiftover"))
    ids = [suite.add_expectation(gx_exp).id for gx_exp in built]
    definition = ctx.validation_definitions.add(gx.ValidationDefinition(name="shiftover", data=batch, suite=suite))
    result = definition.run(expectation_parameters=parameters or {}, result_format="SUMMARY")
    by_id = {r.expectation_config.id: r for r in result.results}  # type: ignore[union-attr]
    return [_outcome(exp, by_id[gx_id]) for exp, gx_id in zip(expectations, ids, strict=True)]


def _datasource(ctx: Any, engine: Engine) -> Any:
    return dialect_for(engine).gx_datasource(ctx, engine.url.render_as_string(hide_password=False))


def _outcome(exp: Expectation, res: Any) -> ExpectationOutcome:
    body = res.result or {}
    observed = body.get("observed_value", _count(body.get("unexpected_count", "")))
    sample = [str(v) for v in (body.get("partial_unexpected_list") or [])[:10]]
    error = ""
    info = res.exception_info or {}
    if info.get("raised_exception"):
        error = str(info.get("exception_message"))
    else:
        nested = [v for v in info.values() if isinstance(v, dict) and v.get("raised_exception")]
        if nested:
            error = str(nested[0].get("exception_message"))
    return ExpectationOutcome(
        type=exp.type,
        kwargs=_plain(exp.kwargs),
        severity=exp.severity,
        success=bool(res.success),
        observed="" if observed is None else str(observed),
        sample=sample,
        error=error,
    )


def _count(value: Any) -> Any:
    """A row count as an integer: GX reports MariaDB's counts as floats (``1.0``)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _plain(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, str | int | float | bool | None) else str(v) for k, v in kwargs.items()}
