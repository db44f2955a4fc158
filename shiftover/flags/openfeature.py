"""Shiftover's flags through the OpenFeature Python SDK, for applications already using it.

    from openfeature import api
    api.set_provider(ShiftoverProvider(FlagClient(store_engine)))
    api.get_client().get_boolean_value("orders-v2:reads_percent", False, EvaluationContext("42"))

Values come from the ``FlagClient``'s cache (no database round trip per evaluation). A boolean
evaluation of a numeric flag is a percentage rollout of the context's targeting key; of a
``<migration>:reads_percent`` flag it is the migration's read routing, targeting rules included.
Reasons: ``CACHED`` normally, ``SPLIT``/``TARGETING_MATCH`` for rollouts, ``STALE`` while the
control store is unreachable (last known values), ``DEFAULT`` when it was never reached.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata

from shiftover.flags.bucketing import Rollout, Targeting
from shiftover.flags.client import FlagClient

_READS = ":reads_percent"


class ShiftoverProvider(AbstractProvider):
    def __init__(self, client: FlagClient) -> None:
        super().__init__()
        self.client = client

    def get_metadata(self) -> Metadata:
        return Metadata(name="shiftover")

    def shutdown(self) -> None:
        self.client.close()

    # -- typed resolvers ----------------------------------------------------------
    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        raw = self.client.get(flag_key, _MISSING)
        if raw is _MISSING:
            return self._missing(flag_key, default_value)
        if isinstance(raw, bool):
            return FlagResolutionDetails(raw, reason=self._reason())
        if isinstance(raw, int | float | Mapping):
            return self._rollout(flag_key, raw, default_value, evaluation_context)
        return _mismatch(default_value, flag_key, raw)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._typed(flag_key, default_value, (str,))

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._typed(flag_key, default_value, (int,))

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        details = self._typed(flag_key, default_value, (int, float))
        return FlagResolutionDetails(float(details.value), details.error_code, details.error_message, details.reason)

    def resolve_object_details(
        self, flag_key: str, default_value: Any, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[Any]:
        return self._typed(flag_key, default_value, (Mapping, Sequence))

    # -- helpers ------------------------------------------------------------------
    def _typed(self, flag_key: str, default: Any, types: tuple[type, ...]) -> FlagResolutionDetails[Any]:
        raw = self.client.get(flag_key, _MISSING)
        if raw is _MISSING:
            return self._missing(flag_key, default)
        if isinstance(raw, bool) or not isinstance(raw, types) or (str not in types and isinstance(raw, str)):
            return _mismatch(default, flag_key, raw)
        return FlagResolutionDetails(raw, reason=self._reason())

    def _rollout(
        self, flag_key: str, raw: Any, default: bool, ctx: EvaluationContext | None
    ) -> FlagResolutionDetails[bool]:
        if ctx is None or ctx.targeting_key is None:
            return FlagResolutionDetails(
                default,
                ErrorCode.TARGETING_KEY_MISSING,
                f"{flag_key} is a percentage rollout: pass a targeting key",
                Reason.ERROR,
            )
        attributes = dict(ctx.attributes)
        if flag_key.endswith(_READS):
            routing = self.client.routing(flag_key.removesuffix(_READS))
            targeted = routing.targeting.decide(ctx.targeting_key, attributes)
            value = routing.reads_new(ctx.targeting_key, attributes)
        else:
            rollout = (
                Rollout(float(raw.get("percent", 0)), Targeting.from_value(raw))
                if isinstance(raw, Mapping)
                else Rollout(float(raw))
            )
            targeted = rollout.targeting.decide(ctx.targeting_key, attributes)
            value = rollout.includes(flag_key, ctx.targeting_key, attributes)
        reason = Reason.TARGETING_MATCH if targeted is not None else Reason.SPLIT
        return FlagResolutionDetails(value, reason=self._reason(reason), variant="on" if value else "off")

    def _reason(self, normal: Reason = Reason.CACHED) -> Reason:
        status = self.client.status()
        if not status.ever_reached:
            return Reason.DEFAULT
        return normal if status.reachable else Reason.STALE

    def _missing(self, flag_key: str, default: Any) -> FlagResolutionDetails[Any]:
        if not self.client.status().ever_reached:
            return FlagResolutionDetails(default, reason=Reason.DEFAULT)  # safe default: the store was never reached
        return FlagResolutionDetails(default, ErrorCode.FLAG_NOT_FOUND, f"no flag {flag_key!r}", Reason.ERROR)


_MISSING: Any = object()


def _mismatch(default: Any, flag_key: str, raw: Any) -> FlagResolutionDetails[Any]:
    return FlagResolutionDetails(
        default,
        ErrorCode.TYPE_MISMATCH,
        f"flag {flag_key!r} holds {type(raw).__name__}, not the requested type",
        Reason.ERROR,
    )
