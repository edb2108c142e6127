"""Enrichment: subscriber side, city precedence, unhomed flows, reloads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.paths import REPO
from voipflow.schemas import flowbatch as fb
from voipflow.streams.config import WorkerConfig
from voipflow.streams.enrich import (
    SOURCE_EXPORTER,
    SOURCE_MMDB,
    SOURCE_PREFIX,
    Enricher,
    TableError,
)

DEMO = REPO / "data" / "cities" / "demo-cities.csv"
HOME = "10.0.0.0/8,2001:db8::/32"


def addrs(*texts: str) -> np.ndarray:
    return np.array([fb.text_to_addr16(t) for t in texts], dtype="S16")


def names(e: Enricher, ids: np.ndarray) -> list[str | None]:
    return [e.registry.cities[i].name if i >= 0 else None for i in ids]


def test_demo_table_places_both_directions_and_counts_unhomed() -> None:
    e = Enricher(WorkerConfig(prefix_table=DEMO, home_networks=HOME))
    e.start()
    b = fb.make_batch(
        {
            "src_addr": addrs("10.1.2.3", "8.8.8.8", "2001:db8:c::5", "1.1.1.1", "10.200.0.1"),
            "dst_addr": addrs("8.8.8.8", "10.4.0.9", "2001:4860::1", "2.2.2.2", "9.9.9.9"),
            "src_port": [1000, 443, 3000, 1, 5],
            "dst_port": [443, 2000, 3478, 2, 6],
            "src_as": [0, 15169, 0, 0, 0],
        }
    )
    r = e.enrich(b)
    assert names(e, r.city_id) == ["Berlin", "Paris", "Warsaw", None, "unknown"]
    assert r.home.tolist() == [True, True, True, False, True]
    assert r.direction.tolist() == [0, 1, 0, 0, 0]
    assert r.subscriber_port.tolist() == [1000, 2000, 3000, 1, 5]
    assert r.peer_port.tolist() == [443, 443, 3478, 2, 6]
    assert r.peer_asn.tolist()[1] == 15169
    assert fb.addr_to_text(r.subscriber_addr[1]) == "10.4.0.9"
    assert r.city_source.tolist() == [SOURCE_PREFIX, SOURCE_PREFIX, SOURCE_PREFIX, 0, 0]


def _mmdb(path: Path) -> None:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    w = MMDBWriter(ip_version=6, database_type="GeoIP2-City", ipv4_compatible=True)
    w.insert_network(
        IPSet(["10.20.0.0/16"]),
        {
            "city": {"names": {"en": "Lisbon"}},
            "subdivisions": [{"names": {"en": "Lisbon"}}],
            "country": {"iso_code": "PT"},
            "location": {"latitude": 38.72, "longitude": -9.14},
        },
    )
    w.to_db_file(str(path))


def test_precedence_prefix_then_mmdb_then_exporter(tmp_path: Path) -> None:
    mmdb = tmp_path / "city.mmdb"
    _mmdb(mmdb)
    exp = tmp_path / "exporters.csv"
    exp.write_text("exporter,city,region,country,lat,lon\n192.0.2.1,Oslo,Oslo,NO,59.9,10.7\n")
    cfg = WorkerConfig(
        prefix_table=DEMO, mmdb_path=mmdb, exporter_city_table=exp, home_networks=HOME
    )
    e = Enricher(cfg)
    e.start()
    b = fb.make_batch(
        {
            # Berlin by the prefix table; Lisbon by mmdb (twice: deduplicated);
            # Oslo by the exporter; unknown with another exporter.
            "src_addr": addrs("10.1.0.1", "10.20.3.4", "10.20.3.4", "10.99.0.1", "10.99.0.1"),
            "dst_addr": addrs("8.8.8.8", "8.8.8.8", "9.9.9.9", "8.8.8.8", "8.8.8.8"),
            "exporter_addr": addrs("192.0.2.1", "192.0.2.1", "192.0.2.1", "192.0.2.1", "192.0.2.2"),
        }
    )
    r = e.enrich(b)
    assert names(e, r.city_id) == ["Berlin", "Lisbon", "Lisbon", "Oslo", "unknown"]
    assert r.city_source.tolist() == [SOURCE_PREFIX, SOURCE_MMDB, SOURCE_MMDB, SOURCE_EXPORTER, 0]
    lisbon = e.registry.cities[int(r.city_id[1])]
    assert (lisbon.country, round(lisbon.lat, 2)) == ("PT", 38.72)
    e.stop()


def test_table_reloads_when_the_file_changes_and_keeps_the_old_on_error(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("prefix,city,region,country,lat,lon\n10.0.0.0/8,Rome,Lazio,IT,41.9,12.5\n")
    e = Enricher(WorkerConfig(prefix_table=table, home_networks=HOME))
    e.start()
    b = fb.make_batch({"src_addr": addrs("10.1.1.1"), "dst_addr": addrs("8.8.8.8")})
    assert names(e, e.enrich(b).city_id) == ["Rome"]
    table.write_text(
        "prefix,city,region,country,lat,lon\n10.0.0.0/8,Rome,Lazio,IT,41.9,12.5\n"
        "10.1.0.0/16,Milan,Lombardy,IT,45.5,9.2\n"
    )
    os.utime(table, ns=(1, 10**18))  # a distinct mtime even on coarse clocks
    e.check_reload()
    assert names(e, e.enrich(b).city_id) == ["Milan"]
    table.write_text("prefix,city\nnot-a-prefix,X\n")
    os.utime(table, ns=(1, 2 * 10**18))
    e.check_reload()  # broken version: counted, old table kept
    assert names(e, e.enrich(b).city_id) == ["Milan"]


def test_bad_table_fails_at_start_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("prefix,city,region,country,lat,lon\n10.0.0.0/8,Rome,Lazio,IT,north,12\n")
    e = Enricher(WorkerConfig(prefix_table=bad, home_networks=HOME))
    with pytest.raises(TableError, match=r"bad\.csv"):
        e.start()


def test_home_networks_setting_is_validated() -> None:
    with pytest.raises(ValueError, match="not a CIDR"):
        WorkerConfig(home_networks="10.0.0.0/8,10.0.0.0/33")
    with pytest.raises(ValueError, match="does not exist"):
        WorkerConfig(prefix_table=Path("/nonexistent/table.csv"))
