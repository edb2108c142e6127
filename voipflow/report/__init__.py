"""The HTML report: VoIP per city, apps over time, classifier, coverage, rules.

``voipflow report --since 7d --out report.html [--pdf report.pdf]`` writes
one self-contained page (no network needed to open it: the charts are SVG
drawn here, the styles are inline, fonts are the reader's system fonts) for
people who never open Grafana. Every figure is the result of a Grafana
panel's own SQL (:mod:`voipflow.report.queries` takes the text from the
dashboard definitions and expands the panel macros as the data source
would, :mod:`voipflow.report.grafana_sql`), so the report and the
dashboards cannot disagree.

Modules: ``grafana_sql`` (macros), ``queries`` (figures -> panel SQL ->
rows; the only module that talks to ClickHouse), ``charts`` (SVG),
``render`` (the page), ``pdf`` (headless Chromium's print to PDF).

Errors::

    ReportError
     +-- ReportQueryError   ClickHouse refused or could not answer a figure's query
     +-- PdfError           headless Chromium is missing or could not print the page
"""

from __future__ import annotations


class ReportError(Exception):
    """Base of the errors of the report package."""


class ReportQueryError(ReportError):
    """A figure's query failed; the message names the figure and the panel."""


class PdfError(ReportError):
    """The page could not be printed to PDF."""
