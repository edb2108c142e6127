"""Grafana dashboards for voipflow, generated from code.

:mod:`voipflow.dashboards.build` turns the definitions in :mod:`voipflow.dashboards.usage`,
:mod:`voipflow.dashboards.rules` and :mod:`voipflow.dashboards.health` (plain dicts, helpers in
:mod:`voipflow.dashboards.grafana`) into the committed ``dashboards/*.json`` files that
Grafana's file provisioning loads (``provisioning/dashboards/voipflow.yaml``).
:mod:`voipflow.dashboards.cities` loads the city coordinates the map needs.

Errors::

    DashboardError
     +-- StaleDashboards   a committed JSON file differs from the generator's output
     +-- CityTableError    a prefix table cannot give city coordinates
"""

from __future__ import annotations


class DashboardError(Exception):
    """Base of the errors of the dashboards package."""


class StaleDashboards(DashboardError):
    """Committed dashboard JSON differs from what the generator writes."""


class CityTableError(DashboardError):
    """A prefix table (CSV) has no usable city coordinates."""
