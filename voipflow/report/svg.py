"""SVG building blocks for the report's charts: palette, scales, ticks, numbers.

Why server-side SVG written here rather than a chart library: the page must
open with no network and print on A4. SVG drawn in Python is in the HTML
itself (no runtime to inline: the Vega/Vega-Lite runtimes are about 1 MB of
JavaScript, which would draw only after a script ran and would need a
browser with scripting to print), it is vector so it prints sharp at any
size, a test can read every drawn number back from the DOM, and it adds no
dependency. The charts the report needs (bars, stacked areas, a dot map, a
strip chart) are a few hundred lines.

Colours: categories use the Okabe-Ito palette (distinguishable with the
common colour-vision deficiencies), sequential values a viridis ramp
(perceptually even, readable in grey).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape

#: Okabe-Ito, most distinct first; the last slot (grey) is for "other".
CATEGORICAL = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#D55E00",  # vermillion
    "#F0E442",  # yellow
)
OTHER = "#999999"
INK = "#1f2328"
MUTED = "#6e7781"
GRID = "#d8dee4"
#: Good / bad pair that stays apart for every common colour-vision deficiency.
GOOD = "#0072B2"
BAD = "#D55E00"

#: viridis at nine even stops.
_VIRIDIS = (
    (68, 1, 84),
    (71, 44, 122),
    (59, 81, 139),
    (44, 113, 142),
    (33, 144, 141),
    (39, 173, 129),
    (92, 200, 99),
    (170, 220, 50),
    (253, 231, 37),
)


def viridis(x: float) -> str:
    """The viridis colour at ``x`` in [0, 1] (clipped)."""
    x = 0.0 if not math.isfinite(x) else min(max(x, 0.0), 1.0)
    pos = x * (len(_VIRIDIS) - 1)
    i = min(int(pos), len(_VIRIDIS) - 2)
    f = pos - i
    a, b = _VIRIDIS[i], _VIRIDIS[i + 1]
    r, g, bl = (round(a[k] + (b[k] - a[k]) * f) for k in range(3))
    return f"#{r:02x}{g:02x}{bl:02x}"


def attr(value: object) -> str:
    """An attribute value, quoted and escaped."""
    return '"' + escape(str(value), quote=True) + '"'


def text(s: object) -> str:
    return escape(str(s), quote=False)


def num(v: float | int | None, decimals: int = 0) -> str:
    """A number as readers write it: thousands separated, fixed decimals; '–' for none."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:,.{decimals}f}"


def compact(v: float) -> str:
    """Axis labels: 950, 1.2k, 3.4M."""
    a = abs(v)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            s = f"{v / div:.1f}".rstrip("0").rstrip(".")
            return s + suffix
    if a and a < 1:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.0f}"


def pct(v: float | None, decimals: int = 1) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v * 100:.{decimals}f} %"


def nice_ticks(high: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``high``."""
    if high <= 0 or not math.isfinite(high):
        return [0.0, 1.0]
    raw = high / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    n = math.ceil(high / step - 1e-9)
    return [i * step for i in range(n + 1)]


def time_ticks(t0: int, t1: int, max_ticks: int = 8) -> list[tuple[int, str]]:
    """Tick positions (epoch s, UTC) and labels on whole hours or days."""
    span = max(t1 - t0, 1)
    steps = (3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 30 * 86400)
    step = next((s for s in steps if span / s <= max_ticks), 30 * 86400)
    first = -(-t0 // step) * step
    out = []
    for t in range(first, t1 + 1, step):
        d = datetime.fromtimestamp(t, UTC)
        label = f"{d:%d %b}" if step >= 86400 else f"{d:%d %b %H:%M}"
        out.append((t, label))
    return out


def svg_open(width: float, height: float, label: str, cls: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class={attr("chart " + cls)} '
        f'viewBox="0 0 {width:.0f} {height:.0f}" width="100%" role="img" aria-label={attr(label)} '
        f'preserveAspectRatio="xMidYMid meet">'
    )


def legend(items: Sequence[tuple[str, str]], x: float, y: float, width: float) -> str:
    """Swatches with labels in rows from (x, y), wrapping at ``width``."""
    out = []
    cx, cy = x, y
    for label, colour in items:
        w = 18 + 6.5 * len(label) + 14
        if cx + w > x + width and cx > x:
            cx, cy = x, cy + 16
        out.append(
            f'<rect x="{cx:.1f}" y="{cy - 9:.1f}" width="11" height="11" rx="2" '
            f"fill={attr(colour)}/>"
            f'<text x="{cx + 15:.1f}" y="{cy:.1f}" class="lg">{text(label)}</text>'
        )
        cx += w
    return "".join(out)


def legend_height(labels: Iterable[str], width: float) -> float:
    rows, cx = 1, 0.0
    for label in labels:
        w = 18 + 6.5 * len(label) + 14
        if cx + w > width and cx > 0:
            rows, cx = rows + 1, 0.0
        cx += w
    return rows * 16


def y_axis(
    ticks: Sequence[float], x0: float, x1: float, y_of: object, fmt: object = compact
) -> str:
    """Horizontal grid lines with labels left of ``x0``."""
    out = []
    for v in ticks:
        y = y_of(v)  # type: ignore[operator]
        out.append(
            f'<line x1="{x0:.1f}" x2="{x1:.1f}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{x0 - 6:.1f}" y="{y + 4:.1f}" class="ax" text-anchor="end">'
            f"{text(fmt(v))}</text>"  # type: ignore[operator]
        )
    return "".join(out)
