"""What a diff found: each differing key with its kind, and the totals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Key = tuple[Any, ...]

MISSING = "missing"  # in the source, not in the target
EXTRA = "extra"  # in the target, not in the source
CHANGED = "changed"  # in both, some columns differ


@dataclass(frozen=True)
class Difference:
    key: Key
    kind: str  # missing | extra | changed
    columns: tuple[str, ...] = ()  # target names of the differing columns (changed)
    detail: dict[str, Any] = field(default_factory=dict)  # column -> [source, target] (changed)

    def as_row(self) -> dict[str, Any]:
        """A plain dict for artifacts and JSON."""
        return {
            "key": _plain_key(self.key),
            "kind": self.kind,
            "columns": ", ".join(self.columns),
        }


def _plain_key(key: Key) -> str:
    return str(key[0]) if len(key) == 1 else str(tuple(str(k) for k in key))


@dataclass
class DiffReport:
    table: str
    differences: list[Difference] = field(default_factory=list)
    source_rows: int = 0
    target_rows: int = 0
    segments: int = 0
    segments_resumed: int = 0
    segments_differing: int = 0  # segments whose checksum differed and were narrowed to rows
    truncated: bool = False  # stopped at max_differences
    seconds: float = 0.0
    run_id: str | None = None

    @property
    def equal(self) -> bool:
        return not self.differences and not self.truncated

    def counts(self) -> dict[str, int]:
        out = {MISSING: 0, EXTRA: 0, CHANGED: 0}
        for d in self.differences:
            out[d.kind] += 1
        return out

    def summary(self) -> str:
        if self.equal:
            return f"{self.table}: equal ({self.source_rows} rows, {self.segments} segments)"
        c = self.counts()
        more = " (stopped at max_differences)" if self.truncated else ""
        return (
            f"{self.table}: {len(self.differences)} differing key(s){more}: "
            f"{c[MISSING]} missing, {c[EXTRA]} extra, {c[CHANGED]} changed"
        )
