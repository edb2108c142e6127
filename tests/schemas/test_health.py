"""exporter-health.v1: the codec accepts what the collectors write and refuses,
with the place named, what the contract does not allow."""

from __future__ import annotations

import json
from typing import Any

import pytest

from voipflow.collectors.codec.call import ExporterStats
from voipflow.collectors.health import ExporterTracker
from voipflow.schemas.flowbatch import text_to_addr16
from voipflow.schemas.health import (
    HealthError,
    HealthFormatError,
    HealthVersionError,
    decode_health,
    encode_health,
    health_fields,
    validate_health,
)

REPORT: dict[str, Any] = {
    "schema": "exporter-health.v1",
    "ts_ms": 1_700_000_000_000,
    "collector": "probe-1:4242",
    "exporter": "2001:db8::1",
    "observation_domain_id": 4_294_967_295,
    "netflow_version": 10,
    "packets": 12,
    "records": 340,
    "bytes": 18_000,
    "decode_errors": 1,
    "templates": 3,
    "records_held": 0,
    "sequence_lost": 5,
    "exporter_restarts": 0,
    "sampling_rate": 1000,
    "kernel_drops": 2**64 - 1,
}


def test_round_trip_keeps_every_value() -> None:
    data = encode_health(REPORT)
    assert decode_health(data) == REPORT
    assert decode_health(data.decode()) == REPORT
    assert set(json.loads(data)) == set(health_fields())


def test_what_the_collector_writes_is_a_valid_report() -> None:
    tracker = ExporterTracker("probe-1:4242")
    stats = ExporterStats(
        exporter=text_to_addr16("192.0.2.7"),
        observation_domain_id=256,
        netflow_version=9,
        packets=4,
        records=90,
        bytes=5_000,
        errors={"unknown_template": 2},
        sequence_lost=3,
        restarts=1,
        templates=2,
        held_sets=1,
        sampling_rate=100,
    )
    tracker.add({(stats.exporter, 256): stats}, now_ms=1_000)
    reports = tracker.health_reports(now_ms=2_000, kernel_drops=7)
    assert len(reports) == 1
    report = validate_health(reports[0])
    assert list(report) == list(health_fields())
    assert (report["exporter"], report["decode_errors"], report["kernel_drops"]) == (
        "192.0.2.7",
        2,
        7,
    )


@pytest.mark.parametrize(
    ("change", "error", "where"),
    [
        ({"schema": "exporter-health.v2"}, HealthVersionError, "schema"),
        ({"packets": -1}, HealthError, "packets"),
        ({"records": 1.5}, HealthError, "records"),
        ({"bytes": True}, HealthError, "bytes"),
        ({"kernel_drops": 2**64}, HealthError, "kernel_drops"),
        ({"netflow_version": 256}, HealthError, "netflow_version"),
        ({"templates": 2**32}, HealthError, "templates"),
        ({"observation_domain_id": -1}, HealthError, "observation_domain_id"),
        ({"exporter": ""}, HealthError, "exporter"),
        ({"collector": None}, HealthError, "collector"),
        ({"extra": 1}, HealthError, "extra"),
    ],
)
def test_refusals_name_the_field(
    change: dict[str, Any], error: type[Exception], where: str
) -> None:
    with pytest.raises(error, match=where):
        encode_health({**REPORT, **change})


def test_missing_field_and_garbage() -> None:
    report = dict(REPORT)
    del report["sampling_rate"]
    with pytest.raises(HealthError, match="sampling_rate"):
        validate_health(report)
    with pytest.raises(HealthFormatError):
        decode_health(b"{not json")
    with pytest.raises(HealthFormatError):
        decode_health(b"[1, 2]")
    with pytest.raises(HealthError, match="ts_ms"):
        decode_health(json.dumps({**REPORT, "ts_ms": float("inf")}))
