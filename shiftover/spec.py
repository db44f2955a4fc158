"""A migration declared as data: the YAML spec and its pydantic model.

``load_spec`` checks the file's shape (types, unknown gates, canary order, target differs
from source); ``shiftover.preflight.check_databases`` then checks it against the live
databases (tables, columns, keys). Both run before anything is written.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shiftover.credentials import inline_password_problem, is_reference
from shiftover.errors import SpecError
from shiftover.gates import GATE_NAMES

STAGES = ("backfill", "validate", "canary", "switch_writes", "decommission")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(_Model):
    """One side of the migration: a database URL (or a reference to one, ``shiftover.credentials``)
    and a table in it."""

    url: str
    table: str
    schema_name: str | None = Field(default=None, alias="schema")

    @field_validator("url")
    @classmethod
    def _no_inline_password(cls, value: str) -> str:
        # The control store keeps the spec, and every application instance can read the control store.
        problem = inline_password_problem(value, "the control store (readable by every application instance)")
        if problem is not None:
            raise ValueError(problem)
        return value


def _one_key_as_list(value: Any) -> Any:
    return (value,) if isinstance(value, str) else value


def _distinct_keys(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("at least one key column is needed")
    if len(set(value)) != len(value):
        raise ValueError("key columns repeat")
    return value


# A spec's ``key``: one column name or a list of distinct ones (every spec kind).
KeyColumns = Annotated[tuple[str, ...], BeforeValidator(_one_key_as_list), AfterValidator(_distinct_keys)]


class ColumnSpec(_Model):
    """A column to copy. ``target`` renames it; ``sql`` computes it from source columns."""

    name: str
    target: str | None = None
    sql: str | None = None

    @property
    def target_name(self) -> str:
        return self.target or self.name


SCHEDULER_ADDRESS = re.compile(r"(tcp|tls)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")


def scheduler_address_problem(address: str) -> str | None:
    """Why ``address`` is not a Dask scheduler's address (``tcp://host:port`` or ``tls://host:port``), or None."""
    match = SCHEDULER_ADDRESS.fullmatch(address)
    if match is None:
        return f"{address!r} is not a Dask scheduler address: tcp://host:port (or tls://host:port), e.g. tcp://127.0.0.1:8786"
    if not 0 < int(match.group(3)) < 65536:
        return f"{address!r}: the port must be 1-65535"
    return None


def _stall_above_ttl(value: float, info: ValidationInfo) -> float:
    ttl = info.data.get("lease_ttl_seconds")
    if ttl is not None and value <= ttl:
        raise ValueError(
            f"{value:g} s must be above lease_ttl_seconds ({ttl:g} s): the stall limit is how long a live "
            "worker's heartbeat keeps renewing a segment on which its work makes no progress"
        )
    return value


# ``stall_seconds`` (both ``distributed`` blocks): a worker that makes no progress on a segment
# for that long (no chunk committed, no checksum query returned), though alive, gives the segment
# up: its lease lapses, another worker takes it over, and its stuck statement is cancelled. The
# default, 600 s, is far above one chunk or one screening query of a segment; lower it where work
# is never blocked that long on purpose, raise it for very large segments on a slow engine.
StallSeconds = Annotated[float, Field(gt=2, le=86_400, validate_default=True), AfterValidator(_stall_above_ttl)]


def _scheduler_for_dask(value: str | None, info: ValidationInfo) -> str | None:
    """A ``scheduler`` is given exactly in mode ``dask`` (the field after ``mode``), and is an address."""
    mode = info.data.get("mode")
    if mode is None:  # the mode itself was refused: that is the error to report
        return value
    if mode != "dask":
        if value is not None:
            raise ValueError(f"a scheduler address is only for mode dask (this is mode {mode})")
        return value
    if value is None:
        raise ValueError("mode dask needs the Dask scheduler's address, e.g. tcp://127.0.0.1:8786")
    if is_reference(value):
        return value  # checked again once resolved, where the run connects
    problem = scheduler_address_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# ``scheduler`` of a ``distributed`` section: declare it after ``mode``, which it is checked against.
DaskScheduler = Annotated[str | None, Field(validate_default=True), AfterValidator(_scheduler_for_dask)]


class _WorkersSpec(_Model):
    workers: Annotated[int, Field(ge=1, le=64)]
    segments_per_worker: Annotated[int, Field(ge=1, le=64)] = 2
    lease_ttl_seconds: Annotated[float, Field(ge=2, le=3600)] = 30.0
    stall_seconds: StallSeconds = 600.0


def _flow_slash_deployment(value: str, example: str) -> str:
    flow_name, _, name = value.partition("/")
    if not flow_name or not name or "/" in name:
        raise ValueError(f"{value!r} is not flow-name/deployment-name (e.g. {example})")
    return value


class DiffDistributedSpec(_WorkersSpec):
    """``validation.distributed``: the checksum diff's key-range segments screened and narrowed by
    ``workers`` workers that claim them by lease in the control store (PostgreSQL or MariaDB/MySQL)
    and record each segment's differences there; the run aggregates them into the report an
    in-process diff gives. ``mode``: ``processes`` starts local OS processes of the run;
    ``deployment`` one Prefect run per worker of the ``deployment`` on its work pool (the validate
    flow starts them; a gate run elsewhere refuses it); ``dask`` one long-running loop per worker of
    the ``dask.distributed`` cluster whose ``scheduler`` is given, as the backfill's mode ``dask``.
    ``stall_seconds`` (default 600, above ``lease_ttl_seconds``): a worker whose checksum queries
    make no progress on a segment that long gives it up to another worker."""

    mode: Literal["processes", "deployment", "dask"] = "processes"
    deployment: str = "diff-worker/diff-worker"
    scheduler: DaskScheduler = None

    @field_validator("deployment")
    @classmethod
    def _flow_slash_deployment(cls, value: str) -> str:
        return _flow_slash_deployment(value, "diff-worker/diff-worker")


class DistributedSpec(_Model):
    """``backfill.distributed``: copy with ``workers`` workers claiming segments by lease in the
    control store (PostgreSQL or MariaDB/MySQL), under one shared rows/s budget. ``mode``:
    ``processes`` starts them as local OS processes of the run; ``deployment`` starts one Prefect
    run per worker of the ``deployment`` (``flow-name/deployment-name``) on its work pool, so
    workers run wherever that pool's workers run; ``dask`` submits ``workers`` long-running loops to
    the ``dask.distributed`` cluster whose ``scheduler`` is given (``tcp://host:port``, or a
    ``${NAME}`` reference), one per Dask worker. ``stall_seconds`` (default 600, above
    ``lease_ttl_seconds``): a worker alive but stuck (no chunk committed that long, e.g. blocked on a
    row lock) gives its segment up: another worker resumes it from its checkpoint."""

    workers: Annotated[int, Field(ge=1, le=64)]
    mode: Literal["processes", "deployment", "dask"] = "processes"
    deployment: str = "backfill-worker/backfill-worker"
    segments_per_worker: Annotated[int, Field(ge=1, le=64)] = 2
    lease_ttl_seconds: Annotated[float, Field(ge=2, le=3600)] = 30.0
    stall_seconds: StallSeconds = 600.0
    scheduler: DaskScheduler = None

    @field_validator("deployment")
    @classmethod
    def _flow_slash_deployment(cls, value: str) -> str:
        return _flow_slash_deployment(value, "backfill-worker/backfill-worker")


MAX_NICE_RATIO = 100.0  # the longest rest after a chunk, in chunk times (spec and run-time throttle)


class PaceSpec(_Model):
    """A backfill's pace, the table's and the column backfill's alike (``backfill.throttle.Throttle``
    reads it; the rate, the rest and the chunk size are retunable while it runs, ``shiftover
    throttle``): rows per chunk, a rows/s cap, a chunk duration the size is steered toward."""

    chunk_rows: Annotated[int, Field(gt=0, le=1_000_000)] = 10_000
    max_rows_per_second: Annotated[float, Field(gt=0)] | None = None
    target_chunk_seconds: Annotated[float, Field(gt=0)] | None = None
    # after each chunk, rest this many times the chunk's own time (gh-ost's --nice-ratio): 0.5
    # gives the server a third of the time without the backfill's writes, for a third fewer rows/s
    nice_ratio: Annotated[float, Field(ge=0, le=MAX_NICE_RATIO)] | None = None


class BackfillSpec(PaceSpec):
    concurrency: Annotated[int, Field(ge=1, le=64)] = 2
    lag_query: str | None = None
    lag_threshold: float | None = None
    create_target: bool = False
    distributed: DistributedSpec | None = None

    @model_validator(mode="after")
    def _lag_pair(self) -> BackfillSpec:
        if (self.lag_query is None) != (self.lag_threshold is None):
            raise ValueError("lag_query and lag_threshold go together")
        return self


class ValidationSpec(_Model):
    segments: Annotated[int, Field(ge=1, le=4096)] = 16
    row_threshold: Annotated[int, Field(ge=1)] = 2_000  # below this, compare rows instead of bisecting
    max_differences: Annotated[int, Field(ge=1)] = 10_000
    float_tolerance: Annotated[float, Field(ge=0)] | None = None
    timestamp_precision: Literal["s", "ms", "us"] = "us"
    exclude: tuple[str, ...] = ()
    repair: bool = True
    max_repair_rounds: Annotated[int, Field(ge=0, le=20)] = 3
    distributed: DiffDistributedSpec | None = None


class Expectation(_Model):
    """A Great Expectations expectation by its snake_case name, e.g. ``expect_column_values_to_not_be_null``."""

    type: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    severity: Literal["blocking", "warning"] = "blocking"
    stages: tuple[str, ...] = ()  # stages whose expectations gate runs it; empty: every stage

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [s for s in value if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; stages with gates: {', '.join(STAGES)}")
        return value


class GateSpec(_Model):
    name: str
    blocking: bool = True
    threshold: float | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in GATE_NAMES:
            raise ValueError(f"unknown gate {value!r}; known gates: {', '.join(sorted(GATE_NAMES))}")
        return value


def _default_gates() -> dict[str, tuple[GateSpec, ...]]:
    return {
        "validate": (GateSpec(name="row_count"), GateSpec(name="checksum"), GateSpec(name="expectations")),
        "canary": (
            GateSpec(name="reconcile_drained"),
            GateSpec(name="shadow_mismatch", threshold=0.0),
            GateSpec(name="error_rate"),
            GateSpec(name="checksum"),  # over rows changed during the step when the table has updated_at
        ),
        "switch_writes": (GateSpec(name="reconcile_drained"), GateSpec(name="checksum")),
    }


class CanarySpec(_Model):
    steps: tuple[Annotated[float, Field(gt=0, le=100)], ...] = (1, 10, 50, 100)
    soak_seconds: Annotated[float, Field(ge=0)] = 0
    shadow_reads: bool = True

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        return check_canary_steps(steps)


def check_canary_steps(steps: tuple[float, ...]) -> tuple[float, ...]:
    """Canary percentages (a table's reads, a route's users) rise step by step to 100."""
    if not steps:
        raise ValueError("at least one canary step is needed (end with 100)")
    for before, after in pairwise(steps):
        if after <= before:
            raise ValueError(f"canary steps must increase: {before:g} is followed by {after:g}")
    if steps[-1] != 100:
        raise ValueError(f"the last canary step must be 100, not {steps[-1]:g}")
    return steps


class ApprovalSpec(_Model):
    # Dumped under the spec's own names (``keys``), so a dumped spec loads again (a route move's flow
    # reads a spec that was written from its model).
    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)

    approvers: tuple[str, ...] = ()  # empty: anyone may approve
    timeout_seconds: Annotated[float, Field(gt=0)] = 3600
    # A run may answer this spec's approvals itself (--auto-approve) even though it names approvers:
    # the spec's author, not whoever starts a run, decides that approvals can be waived (demos, drills).
    auto: bool = False
    # Each approver's public key (`shiftover keygen` prints it): with keys, every human answer must be
    # signed by the named approver's key for this migration, step, epoch and attempt (shiftover.signing).
    # (Named ``public_keys`` here: a model attribute called ``keys`` makes ``dict(model)`` take it for
    # a mapping, which breaks Prefect's walk over task arguments.)
    public_keys: dict[str, str] | None = Field(default=None, alias="keys")

    @field_validator("public_keys")
    @classmethod
    def _keys_cover_approvers(cls, keys: dict[str, str] | None, info: ValidationInfo) -> dict[str, str] | None:
        if keys is None:
            return None
        from shiftover.signing import NAME_PATTERN, parse_public_key

        approvers = info.data.get("approvers", ())
        if not approvers:
            raise ValueError("keys need approvers: list the approvers they belong to in approvals.approvers")
        unsignable = [a for a in approvers if not re.match(NAME_PATTERN, a)]
        if unsignable:  # a signed name is one line of the signed text and names the key's file
            raise ValueError(f"approver name(s) {unsignable} must be letters, digits and . _ @ - to sign")
        missing = [a for a in approvers if a not in keys]
        if missing:
            raise ValueError(f"no key for approver(s) {', '.join(missing)}: every listed approver needs one")
        unlisted = [k for k in keys if k not in approvers]
        if unlisted:
            raise ValueError(f"key(s) for {', '.join(unlisted)}, who are not in approvals.approvers")
        for name, text in keys.items():
            try:
                parse_public_key(text)
            except ValueError as exc:
                raise ValueError(f"the key of {name!r}: {exc}") from None
        return keys

    def auto_permission(self) -> str | None:
        """Why a run may answer approvals itself, or None when only a person may."""
        if self.auto:
            return "the spec sets approvals.auto"
        return None if self.approvers else "the spec names no approvers"


class ArchiveSpec(_Model):
    suffix: str = "_shiftover_archive"
    retention_days: Annotated[float, Field(ge=0)] = 7
    export_parquet: str | None = None  # a directory


class MigrationSpec(_Model):
    """The whole declaration of one migration."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
    source: Endpoint
    target: Endpoint
    key: KeyColumns
    columns: tuple[ColumnSpec, ...] = ()  # empty: every source column, same names
    transform: str | None = None  # "package.module:function" over a pandas DataFrame chunk
    backfill: BackfillSpec = BackfillSpec()
    validation: ValidationSpec = ValidationSpec()
    # Rows the target holds under source keys before the run: refuse them (the rehearsal), or let
    # the source's rows replace them (the backfill skips them; the validate stage's repair rewrites them).
    on_existing: Literal["fail", "overwrite", "keep"] = "fail"
    expectations: tuple[Expectation, ...] = ()
    gates: dict[str, tuple[GateSpec, ...]] = Field(default_factory=_default_gates)
    canary: CanarySpec = CanarySpec()
    approvals: ApprovalSpec = ApprovalSpec()
    archive: ArchiveSpec = ArchiveSpec()

    @field_validator("columns", mode="before")
    @classmethod
    def _column_shorthand(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [{"name": c} if isinstance(c, str) else c for c in value]
        return value

    @field_validator("gates", mode="before")
    @classmethod
    def _gate_shorthand(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = dict(_default_gates())
        for stage, gates in value.items():
            if stage not in STAGES:
                raise ValueError(f"unknown stage {stage!r}; stages with gates: {', '.join(STAGES)}")
            merged[stage] = [{"name": g} if isinstance(g, str) else g for g in (gates or [])]
        return merged

    @field_validator("on_existing")
    @classmethod
    def _existing_rows(cls, value: str, info: ValidationInfo) -> str:
        if value == "keep":
            raise ValueError(
                "'keep' is not supported yet: the backfill would keep the target's rows, but the validate "
                "stage compares every key and its repair replaces them with the source's rows; use 'overwrite' "
                "(what a run does) or empty the target"
            )
        validation = info.data.get("validation")
        if value == "overwrite" and validation is not None and not validation.repair:
            raise ValueError(
                "'overwrite' needs validation.repair: the backfill never replaces a row already in the target, "
                "the validate stage's repair does"
            )
        return value

    @field_validator("transform")
    @classmethod
    def _transform_path(cls, value: str | None) -> str | None:
        if value is not None and ":" not in value:
            raise ValueError("transform must be 'package.module:function'")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> MigrationSpec:
        if _same_place(self.source, self.target):
            raise ValueError("target is identical to source (same database and table)")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError("columns repeat")
        targets = [c.target_name for c in self.columns]
        if len(set(targets)) != len(targets):
            raise ValueError("two columns map to the same target column")
        if self.columns:
            missing = [k for k in self.key if k not in names]
            if missing:
                raise ValueError(f"key column(s) {missing} must be listed in columns")
            computed_keys = [c.name for c in self.columns if c.name in self.key and c.sql]
            if computed_keys:
                raise ValueError(f"key column(s) {computed_keys} cannot be computed by sql")
        return self

    def load_transform(self) -> Callable[[Any], Any] | None:
        """Import the spec's Python transform, if any."""
        if self.transform is None:
            return None
        module_name, _, attr = self.transform.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]
        except (ImportError, AttributeError) as exc:
            raise SpecError("transform", f"cannot import {self.transform!r}: {exc}") from None

    def gates_for(self, stage: str) -> tuple[GateSpec, ...]:
        return self.gates.get(stage, ())

    def distributed_fields(self) -> list[tuple[str, str]]:
        """(field, work) for each part of the run the spec spreads over workers, which need a
        control store that machines share."""
        fields = [("backfill.distributed", "backfill")] if self.backfill.distributed is not None else []
        return fields + ([("validation.distributed", "diff")] if self.validation.distributed is not None else [])


def stored_form(spec: BaseModel) -> dict[str, Any]:
    """The spec (any kind) as the control store keeps it: references as written, any other
    password hidden (anyone who can read the control store, every application instance included,
    must not learn a database password; a spec with an inline password is refused when it is parsed)."""
    from shiftover.connect import redact

    data = spec.model_dump(mode="json", by_alias=True)
    for name, value in spec:
        if isinstance(value, Endpoint):
            stored = data[type(spec).model_fields[name].alias or name]
            stored["url"] = redact(stored["url"])
    return data


def _same_place(a: Endpoint, b: Endpoint) -> bool:
    """Same database and table, judged without resolving references (``preflight`` checks the
    resolved servers when it connects)."""
    from shiftover.connect import normalise_url

    if is_reference(a.url) or is_reference(b.url):
        return a.url == b.url and a.table == b.table and a.schema_name == b.schema_name
    same_db = normalise_url(a.url).render_as_string(False) == normalise_url(b.url).render_as_string(False)
    return same_db and a.table == b.table and a.schema_name == b.schema_name


# The other kinds of spec, and where each is taken (a table move has no ``kind``, or ``kind: table``).
OTHER_KINDS = {
    "route": "`shiftover plan` prints its stages and the route-move flow runs it (prefect.yaml: route-move)",
    "expand_contract": "`shiftover plan`, `run` and `rollback` take it",
}


def parse_spec(data: dict[str, Any]) -> MigrationSpec:
    """Validate a table move's spec dict; the first problem becomes a ``SpecError`` naming its field
    (another kind of spec is named as such, not reported as a table move missing its fields)."""
    kind = data.get("kind", "table")
    if kind in OTHER_KINDS:
        raise SpecError("kind", f"this is a kind: {kind} spec, not a table move: {OTHER_KINDS[kind]}")
    if kind != "table":
        raise SpecError("kind", f"unknown kind {kind!r}: table (the default), {', '.join(OTHER_KINDS)}")
    data = {k: v for k, v in data.items() if k != "kind"}
    try:
        return MigrationSpec.model_validate(data)
    except ValidationError as exc:
        raise spec_error(exc) from None


def spec_error(exc: ValidationError) -> SpecError:
    """A spec model's first validation error as a ``SpecError`` naming its field (every spec kind)."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(spec)"
    message = "unknown field" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
    return SpecError(field, message)


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """A YAML spec file's top-level mapping (every spec kind), or ``SpecError`` naming the file's problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError("(file)", f"no spec file at {path}") from None
    except yaml.YAMLError as exc:
        raise SpecError("(file)", f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError("(file)", f"{path} must hold a mapping at the top level")
    return data


def load_spec(path: str | Path) -> MigrationSpec:
    """Read and validate a YAML spec file."""
    return parse_spec(read_spec_file(path))
