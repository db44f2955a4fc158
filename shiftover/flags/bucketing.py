"""Stable percentage bucketing with targeting rules evaluated first (as Unleash does).

A key's bucket is a fixed number in [0, 100) derived from a hash of the flag name and the
key, so a key is "in" at p% exactly when its bucket is below p: raising the percentage only
ever adds keys, never moves one back. Hashing the flag name too keeps different flags'
rollouts independent. Targeting rules (an allow-list of keys, attribute equality) are
checked before the percentage, so a canary can start with the team's own accounts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_SCALE = 100.0 / 2**64


def key_text(bucket_key: Any) -> str:
    """Canonical text of a bucketing key: row keys (tuples) as compact JSON, the rest as str."""
    if isinstance(bucket_key, str):
        return bucket_key
    if isinstance(bucket_key, tuple | list):
        if len(bucket_key) == 1:  # a one-column row key buckets like the bare value (user id 42 == (42,))
            return key_text(bucket_key[0])
        return json.dumps(list(bucket_key), default=str, separators=(",", ":"))
    return str(bucket_key)


def bucket(flag_key: str, bucket_key: Any) -> float:
    """The key's fixed position in [0, 100) for this flag."""
    digest = hashlib.blake2b(f"{flag_key}\x1f{key_text(bucket_key)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") * _SCALE


def in_rollout(flag_key: str, bucket_key: Any, percent: float) -> bool:
    """True when the key falls inside a ``percent`` rollout of ``flag_key`` (monotone in percent)."""
    if percent <= 0:
        return False
    if percent >= 100:
        return True
    return bucket(flag_key, bucket_key) < percent


@dataclass(frozen=True)
class Targeting:
    """Rules checked before the percentage: any match turns the flag on for that request."""

    allow_keys: frozenset[str] = frozenset()  # key_text of keys always included
    attributes: tuple[tuple[str, Any], ...] = ()  # (name, value) pairs; any one equal is a match
    deny_keys: frozenset[str] = frozenset()  # key_text of keys always excluded (checked first)

    @classmethod
    def from_value(cls, value: Mapping[str, Any] | None) -> Targeting:
        """Build from a flag value: ``{"allow": [...], "deny": [...], "attributes": {"group": "internal"}}``."""
        if not value:
            return cls()
        attrs = value.get("attributes") or {}
        return cls(
            allow_keys=frozenset(key_text(k) for k in value.get("allow") or ()),
            deny_keys=frozenset(key_text(k) for k in value.get("deny") or ()),
            attributes=tuple(sorted((str(k), v) for k, v in attrs.items())),
        )

    def to_value(self) -> dict[str, Any]:
        return {"allow": sorted(self.allow_keys), "deny": sorted(self.deny_keys), "attributes": dict(self.attributes)}

    def decide(self, bucket_key: Any, attributes: Mapping[str, Any] | None = None) -> bool | None:
        """True/False when a rule decides, None when the percentage should."""
        if not (self.allow_keys or self.deny_keys or self.attributes):
            return None
        text = key_text(bucket_key)
        if text in self.deny_keys:
            return False
        if text in self.allow_keys:
            return True
        if attributes:
            for name, wanted in self.attributes:
                if name in attributes and attributes[name] == wanted:
                    return True
        return None


@dataclass(frozen=True)
class Rollout:
    """A flag's percentage plus its targeting rules."""

    percent: float = 0.0
    targeting: Targeting = field(default_factory=Targeting)

    def includes(self, flag_key: str, bucket_key: Any, attributes: Mapping[str, Any] | None = None) -> bool:
        decided = self.targeting.decide(bucket_key, attributes)
        if decided is not None:
            return decided
        return in_rollout(flag_key, bucket_key, self.percent)
