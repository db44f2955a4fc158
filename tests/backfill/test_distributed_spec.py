"""``backfill.distributed`` in the spec: its defaults, mode dask's scheduler address, and each wrong value
refused naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from shiftover.backfill.workers import distributed_settings
from shiftover.errors import SpecError
from shiftover.spec import parse_spec


def _spec(distributed: Any) -> dict[str, Any]:
    return {
        "name": "m",
        "source": {"url": "postgresql://127.0.0.1/a", "table": "t"},
        "target": {"url": "postgresql://127.0.0.1/b", "table": "t"},
        "key": "id",
        "backfill": {"distributed": distributed},
    }


def test_defaults_and_the_run_parameter() -> None:
    spec = parse_spec(_spec({"workers": 3})).backfill
    settings = distributed_settings(spec)
    assert settings is not None
    assert (settings.workers, settings.mode, settings.segments, settings.from_spec) == (3, "processes", 6, True)
    assert settings.deployment == "backfill-worker/backfill-worker" and settings.lease_ttl_seconds == 30.0
    assert spec.distributed is not None and spec.distributed.stall_seconds == 600.0
    assert distributed_settings(spec, 5).workers == 5  # type: ignore[union-attr]  # a run's distributed=5 wins
    plain = parse_spec({**_spec(None), "backfill": {}}).backfill
    assert distributed_settings(plain) is None
    by_parameter = distributed_settings(plain, 2)
    assert by_parameter is not None and by_parameter.mode == "processes" and not by_parameter.from_spec
    deployed = parse_spec(_spec({"workers": 2, "mode": "deployment", "deployment": "backfill-worker/nightly"}))
    assert deployed.backfill.distributed is not None and deployed.backfill.distributed.mode == "deployment"
    assert distributed_settings(deployed.backfill).scheduler is None  # type: ignore[union-attr]


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:8786", "tls://dask-scheduler.internal:8786", "tcp://[::1]:8786"])
def test_mode_dask_takes_a_scheduler_address_or_a_reference(address: str) -> None:
    for scheduler in (address, "${DASK_SCHEDULER}"):
        spec = parse_spec(_spec({"workers": 2, "mode": "dask", "scheduler": scheduler})).backfill
        settings = distributed_settings(spec)
        assert settings is not None and settings.mode == "dask" and settings.scheduler == scheduler
        assert settings.segments == 4  # kept as written: a reference is resolved where the run connects


@pytest.mark.parametrize(
    ("distributed", "field", "message"),
    [
        ({"mode": "processes"}, "backfill.distributed.workers", "Field required"),
        ({"workers": 0}, "backfill.distributed.workers", "greater than or equal to 1"),
        ({"workers": 65}, "backfill.distributed.workers", "less than or equal to 64"),
        ({"workers": 2, "mode": "ray"}, "backfill.distributed.mode", "'processes', 'deployment' or 'dask'"),
        ({"workers": 2, "mode": "dask"}, "backfill.distributed.scheduler", "mode dask needs the Dask scheduler"),
        (
            {"workers": 2, "mode": "dask", "scheduler": "127.0.0.1:8786"},
            "backfill.distributed.scheduler",
            "not a Dask scheduler address: tcp://host:port",
        ),
        (
            {"workers": 2, "mode": "dask", "scheduler": "tcp://127.0.0.1:0"},
            "backfill.distributed.scheduler",
            "the port must be 1-65535",
        ),
        (
            {"workers": 2, "mode": "dask", "scheduler": "http://dask:8787"},
            "backfill.distributed.scheduler",
            "not a Dask scheduler address",
        ),
        ({"workers": 2, "scheduler": "tcp://dask:8786"}, "backfill.distributed.scheduler", "only for mode dask"),
        ({"workers": 2, "deployment": "backfill-worker"}, "backfill.distributed.deployment", "flow-name/deployment"),
        ({"workers": 2, "lease_ttl_seconds": 1}, "backfill.distributed.lease_ttl_seconds", "greater than or equal"),
        ({"workers": 2, "stall_seconds": 30}, "backfill.distributed.stall_seconds", "above lease_ttl_seconds"),
        (
            {"workers": 2, "lease_ttl_seconds": 900},  # the default stall limit (600 s) is not above it
            "backfill.distributed.stall_seconds",
            r"600 s must be above lease_ttl_seconds \(900 s\)",
        ),
        ({"workers": 2, "threads": 4}, "backfill.distributed.threads", "unknown field"),
        (4, "backfill.distributed", "valid dictionary"),
    ],
)
def test_a_wrong_value_is_refused_naming_its_field(distributed: Any, field: str, message: str) -> None:
    with pytest.raises(SpecError, match=message) as caught:
        parse_spec(_spec(distributed))
    assert caught.value.field == field


def test_the_diff_workers_stall_limit_is_checked_against_their_lease() -> None:
    validation = {"distributed": {"workers": 2, "lease_ttl_seconds": 20, "stall_seconds": 20}}
    with pytest.raises(SpecError, match="above lease_ttl_seconds") as caught:
        parse_spec({**_spec(None), "backfill": {}, "validation": validation})
    assert caught.value.field == "validation.distributed.stall_seconds"
    validation["distributed"]["stall_seconds"] = 45
    spec = parse_spec({**_spec(None), "backfill": {}, "validation": validation})
    assert spec.validation.distributed is not None and spec.validation.distributed.stall_seconds == 45
