"""Plain-dict builders for Grafana dashboard JSON (Grafana 11/12).

Dashboards are written as Python: a panel is a dict made by one of the
functions here, a dashboard is :func:`dashboard` over a list of panels and
rows. :func:`layout` gives every panel its ``id`` and ``gridPos`` by filling
the 24-column grid left to right, so panel definitions never carry
coordinates. Every query goes to the ClickHouse data source chosen by the
``${datasource}`` variable (type ``grafana-clickhouse-datasource``).

Nothing here talks to Grafana; :mod:`voipflow.dashboards.build` writes the JSON files
that provisioning loads.
"""

from __future__ import annotations

import textwrap
from typing import Any

#: Grafana 12 writes this ``schemaVersion``; Grafana 11 loads it unchanged.
SCHEMA_VERSION = 41
DATASOURCE_TYPE = "grafana-clickhouse-datasource"
#: Every panel and query variable uses the data source the variable selects.
DATASOURCE = {"type": DATASOURCE_TYPE, "uid": "${datasource}"}
#: The provisioned data source (dashboards/provisioning/datasources/clickhouse.yaml).
DEFAULT_DATASOURCE_UID = "voipflow-clickhouse"
GRID_COLUMNS = 24

#: ClickHouse data source ``format`` values (grafana-plugin-sdk sqlutil):
#: 0 turns long rows (time, label, value) into one series per label.
FORMAT_TIME_SERIES = 0
FORMAT_TABLE = 1

Panel = dict[str, Any]


def sql(text: str) -> str:
    """SQL as written in the dashboard modules, without the common indent."""
    return textwrap.dedent(text).strip()


def target(raw_sql: str, *, time_series: bool = False, ref: str = "A") -> dict[str, Any]:
    return {
        "refId": ref,
        "datasource": dict(DATASOURCE),
        "editorType": "sql",
        "queryType": "timeseries" if time_series else "table",
        "format": FORMAT_TIME_SERIES if time_series else FORMAT_TABLE,
        "rawSql": sql(raw_sql),
    }


def _panel(
    kind: str,
    title: str,
    query: str,
    *,
    w: int,
    h: int,
    description: str,
    time_series: bool = False,
    unit: str | None = None,
    decimals: int | None = None,
    options: dict[str, Any] | None = None,
    custom: dict[str, Any] | None = None,
    overrides: list[dict[str, Any]] | None = None,
    transformations: list[dict[str, Any]] | None = None,
    interval: str | None = None,
    max_data_points: int | None = None,
) -> Panel:
    defaults: dict[str, Any] = {}
    if unit:
        defaults["unit"] = unit
    if decimals is not None:
        defaults["decimals"] = decimals
    if custom:
        defaults["custom"] = custom
    p: Panel = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": dict(DATASOURCE),
        "targets": [target(query, time_series=time_series)],
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
        "_size": (w, h),
    }
    if transformations:
        p["transformations"] = transformations
    if interval:
        # The smallest bucket: data finer than its source table is never asked for.
        p["interval"] = interval
    if max_data_points:
        p["maxDataPoints"] = max_data_points
    return p


def timeseries(
    title: str,
    query: str,
    *,
    description: str,
    unit: str | None = None,
    w: int = 12,
    h: int = 8,
    stack: bool = False,
    interval: str | None = None,
    max_data_points: int | None = None,
    overrides: list[dict[str, Any]] | None = None,
) -> Panel:
    custom: dict[str, Any] = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 20 if stack else 0,
        "showPoints": "never",
        "spanNulls": False,
    }
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    return _panel(
        "timeseries",
        title,
        query,
        w=w,
        h=h,
        description=description,
        time_series=True,
        unit=unit,
        custom=custom,
        overrides=overrides,
        options={
            "legend": {"displayMode": "table", "placement": "right", "calcs": ["mean", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        interval=interval,
        max_data_points=max_data_points,
    )


def stat(
    title: str,
    query: str,
    *,
    description: str,
    unit: str | None = None,
    decimals: int | None = None,
    w: int = 4,
    h: int = 4,
) -> Panel:
    return _panel(
        "stat",
        title,
        query,
        w=w,
        h=h,
        description=description,
        unit=unit,
        decimals=decimals,
        options={
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "textMode": "value",
        },
    )


def table(
    title: str,
    query: str,
    *,
    description: str,
    w: int = 24,
    h: int = 8,
    overrides: list[dict[str, Any]] | None = None,
) -> Panel:
    return _panel(
        "table",
        title,
        query,
        w=w,
        h=h,
        description=description,
        overrides=overrides,
        options={"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
    )


def barchart(
    title: str,
    query: str,
    *,
    description: str,
    x_field: str,
    unit: str | None = None,
    w: int = 12,
    h: int = 8,
    horizontal: bool = True,
    stacking: str = "none",
    transformations: list[dict[str, Any]] | None = None,
) -> Panel:
    return _panel(
        "barchart",
        title,
        query,
        w=w,
        h=h,
        description=description,
        unit=unit,
        transformations=transformations,
        options={
            "xField": x_field,
            "orientation": "horizontal" if horizontal else "vertical",
            "stacking": stacking,
            "showValue": "auto",
            "legend": {"displayMode": "list", "placement": "bottom", "calcs": []},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    )


def piechart(title: str, query: str, *, description: str, w: int = 8, h: int = 8) -> Panel:
    return _panel(
        "piechart",
        title,
        query,
        w=w,
        h=h,
        description=description,
        options={
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True},
            "pieType": "donut",
            "displayLabels": ["name", "value"],
            "legend": {"displayMode": "table", "placement": "right", "values": ["value"]},
        },
    )


def geomap(
    title: str,
    query: str,
    *,
    description: str,
    size_field: str,
    text_field: str,
    color_field: str | None = None,
    unit: str | None = None,
    w: int = 12,
    h: int = 14,
) -> Panel:
    """Markers at ``lat``/``lon`` columns, sized by ``size_field``, coloured by ``color_field``.

    The colour follows the size unless another field is named.
    """
    layer = {
        "type": "markers",
        "name": "Cities",
        "tooltip": True,
        "location": {"mode": "coords", "latitude": "lat", "longitude": "lon"},
        "config": {
            "showLegend": True,
            "style": {
                "size": {"field": size_field, "fixed": 5, "min": 4, "max": 30},
                "color": {"field": color_field or size_field, "fixed": "dark-green"},
                "opacity": 0.6,
                "symbol": {"mode": "fixed", "fixed": "img/icons/marker/circle.svg"},
                "text": {"mode": "field", "field": text_field, "fixed": ""},
                "textConfig": {
                    "fontSize": 11,
                    "offsetX": 0,
                    "offsetY": -14,
                    "textAlign": "center",
                    "textBaseline": "middle",
                },
            },
        },
    }
    return _panel(
        "geomap",
        title,
        query,
        w=w,
        h=h,
        description=description,
        unit=unit,
        custom={"hideFrom": {"legend": False, "tooltip": False, "viz": False}},
        options={
            "view": {"id": "fit", "allLayers": True, "lat": 0, "lon": 0, "zoom": 5},
            "controls": {"showZoom": True, "mouseWheelZoom": True, "showAttribution": True},
            "basemap": {"type": "default", "name": "Basemap", "config": {}},
            "layers": [layer],
            "tooltip": {"mode": "details"},
        },
    )


def row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (24, 1)}


def override(field: str, **properties: Any) -> dict[str, Any]:
    """A field override: ``unit="s"`` becomes ``{"id": "unit", "value": "s"}``."""
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [{"id": k, "value": v} for k, v in properties.items()],
    }


def layout(items: list[Panel]) -> list[Panel]:
    """Give each panel an ``id`` and a ``gridPos``, filling rows of 24 columns."""
    out: list[Panel] = []
    x = y = line_h = 0
    for n, item in enumerate(items, start=1):
        p = dict(item)
        w, h = p.pop("_size")
        if not 0 < w <= GRID_COLUMNS:
            raise ValueError(f"panel {p['title']!r}: width {w} outside 1..{GRID_COLUMNS}")
        if p["type"] == "row" or x + w > GRID_COLUMNS:
            x, y, line_h = 0, y + line_h, 0
        p["id"] = n
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        x += w
        line_h = max(line_h, h)
        if p["type"] == "row":
            x, y, line_h = 0, y + h, 0
        out.append(p)
    return out


def datasource_variable() -> dict[str, Any]:
    return {
        "type": "datasource",
        "name": "datasource",
        "label": "Data source",
        "query": DATASOURCE_TYPE,
        "current": {"text": "ClickHouse", "value": DEFAULT_DATASOURCE_UID},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def query_variable(name: str, label: str, query: str, *, multi: bool = True) -> dict[str, Any]:
    """A variable whose values a ClickHouse query lists (first column), refreshed on load.

    "All" is the value ``$__all``: panels wrap their filter in
    ``$__conditionalAll(...)`` so that All adds no condition at all.
    """
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": dict(DATASOURCE),
        "definition": sql(query),
        "query": {"rawSql": sql(query), "editorType": "sql", "format": FORMAT_TABLE},
        "refresh": 1,
        "multi": multi,
        "includeAll": True,
        "current": {"text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
        "regex": "",
        "options": [],
    }


def dashboard(
    *,
    uid: str,
    title: str,
    description: str,
    variables: list[dict[str, Any]],
    panels: list[Panel],
    time_from: str = "now-24h",
    refresh: str = "1m",
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["voipflow"],
        "editable": False,
        "graphTooltip": 1,
        "timezone": "utc",
        "time": {"from": time_from, "to": "now"},
        "refresh": refresh,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "links": [
            {
                "type": "dashboards",
                "tags": ["voipflow"],
                "asDropdown": False,
                "includeVars": False,
                "keepTime": True,
                "title": "voipflow",
            }
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {"list": [datasource_variable(), *variables]},
        "panels": layout(panels),
    }
