"""Charts on edge cases the database can give: one city, zero or missing values."""

from __future__ import annotations

import math

import pytest

from tests.report import dom
from voipflow.report import charts
from voipflow.report.svg import compact, nice_ticks, num, pct, time_ticks, viridis


def _marks(svg: str, cls: str) -> list[dict[str, str]]:
    return [e.attrs for e in dom.parse(svg) if cls in e.attrs.get("class", "").split()]


def test_map_of_one_city_and_cities_without_minutes_or_share() -> None:
    one = charts.city_map(
        [{"city": "Oslo", "lat": 59.9, "lon": 10.7, "voip_minutes": 12.5, "subscribers": 3,
          "voip_share": 0.2}]
    )  # fmt: skip
    (c,) = _marks(one, "city")
    assert c["data-city"] == "Oslo" and float(c["data-minutes"]) == 12.5
    assert all(math.isfinite(float(c[k])) for k in ("cx", "cy", "r"))
    rows = [
        {"city": "A", "lat": 10.0, "lon": 10.0, "voip_minutes": 0.0, "subscribers": 0,
         "voip_share": None},
        {"city": "B", "lat": 10.0, "lon": 10.0, "voip_minutes": 0.0, "subscribers": 0,
         "voip_share": 0.0},
    ]  # fmt: skip
    marks = _marks(charts.city_map(rows), "city")
    assert [m["data-city"] for m in marks] == ["A", "B"]
    assert all(float(m["r"]) >= 2.0 for m in marks)  # still visible


def test_stacked_series_fill_missing_buckets_with_zero() -> None:
    colours = charts.app_colours(["sip", "teams"])
    rows = [
        {"time": 3600, "app": "sip", "voip_minutes": 5.0},
        {"time": 3 * 3600, "app": "teams", "voip_minutes": None},
    ]
    svg = charts.stacked_time(
        rows, "voip_minutes", t0=3600, t1=4 * 3600, interval_s=3600, colours=colours, label="x"
    )
    totals = {a["data-app"]: float(a["data-total"]) for a in _marks(svg, "area")}
    assert totals == {"sip": 5.0, "teams": 0.0}


def test_coverage_strip_ends_with_the_bucket_the_range_reaches() -> None:
    # Hourly buckets over [0 h, 3 h): data in every hour the range covers.
    rows = [{"exporter_ip": "192.0.2.1", "time": h * 3600, "covered": 1.0} for h in range(3)]
    for t1, n_buckets in ((3 * 3600, 3), (3 * 3600 + 60, 4)):
        svg = charts.coverage_strip(rows, ["192.0.2.1"], t0=0, t1=t1, interval_s=3600)
        (e,) = _marks(svg, "exporter")
        assert int(e["data-buckets"]) == n_buckets
        # The range ending on a bucket's start draws no gap there; one
        # minute into the fourth hour, that hour has no data yet: a gap.
        assert int(e["data-gaps"]) == n_buckets - 3


def test_top_cities_with_no_week_before_say_new() -> None:
    svg = charts.top_cities(
        [
            {"city": "A", "voip_minutes": 10.0, "voip_minutes_week_before": 0.0, "change": None},
            {"city": "B", "voip_minutes": 5.0, "voip_minutes_week_before": 10.0, "change": -0.5},
            {"city": "C", "voip_minutes": 500.0, "voip_minutes_week_before": 1.0, "change": 499.0},
        ]
    )
    words = {
        e.attrs["data-city"]: e.text() for e in dom.parse(svg) if "chg" in e.attrs.get("class", "")
    }
    assert words == {"A": "new", "B": "▼ 50.0 %", "C": "▲ ×500"}


def test_numbers_and_scales() -> None:
    assert num(1234567.891) == "1,234,568" and num(None) == "–" and num(float("nan")) == "–"
    assert pct(0.12345) == "12.3 %" and pct(None) == "–"
    assert compact(1_250_000) == "1.2M" and compact(950) == "950" and compact(0.25) == "0.25"
    assert nice_ticks(4442) == [0, 1000, 2000, 3000, 4000, 5000]
    assert nice_ticks(0) == [0.0, 1.0]
    assert (
        viridis(0) == "#440154" and viridis(1) == "#fde725" and viridis(float("nan")) == "#440154"
    )
    ticks = time_ticks(0, 7 * 86400)
    assert [t for t, _ in ticks] == [d * 86400 for d in range(8)]
    assert ticks[0][1] == "01 Jan"


@pytest.mark.parametrize("n", [0, 3, 12])
def test_app_colours_keep_seven_and_grey_the_rest(n: int) -> None:
    apps = [f"app{i}" for i in range(n)]
    colours = charts.app_colours(apps)
    assert len(set(colours[a] for a in apps[:7])) == min(n, 7)
    assert all(colours[a] == "#999999" for a in apps[7:])
