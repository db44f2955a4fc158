"""The dark-launch comparator, Diffy-style: a safe request is replayed to the old upstream twice
and to the new one once. Fields that differ between the two old answers are noise (request ids,
timestamps) and ignored; any other field where the new answer differs from the old is a mismatch.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shiftover.routes.spec import Upstream

STATUS = "(status)"  # the pseudo-field holding the HTTP status


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A JSON value as ``{dotted.path: leaf}`` (lists indexed), so fields compare one by one."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out or {prefix: []}
    return {prefix: value}


def differing(a: Mapping[str, Any], b: Mapping[str, Any]) -> set[str]:
    return {k for k in a.keys() | b.keys() if a.get(k, _MISSING) != b.get(k, _MISSING)}


_MISSING = object()


@dataclass(frozen=True)
class Answer:
    status: int
    fields: dict[str, Any]  # flattened JSON body (or {"(body)": text} when not JSON), plus the status


@dataclass(frozen=True)
class Comparison:
    path: str
    noise: frozenset[str]  # differ between the two old answers: ignored
    mismatched: frozenset[str]  # new differs from old outside the noise
    old: Answer
    new: Answer

    @property
    def matches(self) -> bool:
        return not self.mismatched


def compare_answers(
    path: str, old_a: Answer, old_b: Answer, new: Answer, ignore: frozenset[str] = frozenset()
) -> Comparison:
    noise = differing(old_a.fields, old_b.fields) - {STATUS}  # a flapping status is never noise
    mismatched = differing(old_a.fields, new.fields) - noise - ignore
    return Comparison(path, frozenset(noise), frozenset(mismatched), old_a, new)


def fetch(upstream: Upstream, path: str, headers: Mapping[str, str], timeout: float = 5.0) -> Answer:
    """GET ``path`` from ``upstream`` directly (not through the gateway)."""
    conn = http.client.HTTPConnection(upstream.host, upstream.port, timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers))
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    try:
        fields = flatten(json.loads(body))
    except ValueError:
        fields = {"(body)": body.decode(errors="replace")}
    fields[STATUS] = resp.status
    return Answer(resp.status, fields)


def compare_path(
    old: Upstream, new: Upstream, path: str, headers: Mapping[str, str], ignore: frozenset[str] = frozenset()
) -> Comparison:
    return compare_answers(
        path, fetch(old, path, headers), fetch(old, path, headers), fetch(new, path, headers), ignore
    )


@dataclass(frozen=True)
class DarkLaunchReport:
    compared: int
    mismatches: tuple[Comparison, ...]
    noise: frozenset[str] = field(default_factory=frozenset)
    mirrored: int | None = None  # live requests the gateway mirrored (None: replayed, not mirrored)

    @property
    def mismatch_rate(self) -> float:
        return len(self.mismatches) / self.compared if self.compared else 0.0

    def samples(self, limit: int = 10) -> list[dict[str, Any]]:
        """Mismatch samples for the report: old vs new value of each differing field."""
        return [
            {
                "path": c.path,
                "field": f,
                "old": c.old.fields.get(f),
                "new": c.new.fields.get(f),
                "noise_fields": ", ".join(sorted(c.noise)),
            }
            for c in self.mismatches[:limit]
            for f in sorted(c.mismatched)
        ]


def dark_launch(
    old: Upstream,
    new: Upstream,
    paths: Sequence[str],
    key_header: str,
    users: Iterable[str] | None = None,
    ignore: frozenset[str] = frozenset(),
) -> DarkLaunchReport:
    """Compare every path (with a user key, when given, in ``key_header``); ``ignore``: fields that
    differ by design."""
    user_list = list(users or [])
    results = []
    for i, path in enumerate(paths):
        headers = {key_header: user_list[i % len(user_list)]} if user_list else {}
        results.append(compare_path(old, new, path, headers, ignore))
    noise = frozenset().union(*(c.noise for c in results)) if results else frozenset()
    return DarkLaunchReport(len(results), tuple(c for c in results if not c.matches), noise)
