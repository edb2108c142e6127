"""Grafana dashboards for voipflow, generated from code.

:mod:`dashboards.build` turns the definitions in :mod:`dashboards.usage`,
:mod:`dashboards.rules` and :mod:`dashboards.health` (plain dicts, helpers in
:mod:`dashboards.grafana`) into the committed ``dashboards/*.json`` files that
Grafana's file provisioning loads (``provisioning/dashboards/voipflow.yaml``).
:mod:`dashboards.cities` loads the city coordinates the map needs.

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
