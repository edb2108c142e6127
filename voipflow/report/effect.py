"""The rules' effect: the matched city and app's VoIP before and while each rule applied.

One lane per rule from the "Rule effect" panel's rows
(:mod:`voipflow.schemas.rule_effect`, the SQL ``voipflow rules show``
prints): a grey bar for the call minutes of the span just before the rule
applied, a coloured bar for the same length of time while it applied, and
the leakage (while / before) beside them. Both bars share one scale, so a
block that works leaves a short coloured bar under a long grey one. The
numbers ride in ``data-*`` attributes like every chart of the page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from voipflow.report.svg import GOOD, GRID, MUTED, attr, compact, legend, pct, svg_open, text

W = 720
#: The bar of the span while applied, by action (a block's leak in the warning colour).
AFTER_COLOURS = {"block": "#D55E00"}


def effect_word(action: str) -> str:
    """What while / before means for the action: a block leaks, a throttle leaves a rest."""
    return "leakage" if action == "block" else "remaining"


def rule_effect(rows: Sequence[Mapping[str, Any]], lane_h: int = 30) -> str:
    """Before and while-applied call minutes per rule, on one scale."""
    name_w, value_w = 150, 120
    pw = W - name_w - value_w - 12
    top = max(
        [
            float(r[k] or 0.0) / 60
            for r in rows
            for k in ("call_seconds_before", "call_seconds_after")
        ],
        default=0.0,
    )
    top = top or 1.0
    height = 8 + len(rows) * lane_h + 30
    out = [svg_open(W, height, "Rules' effect: call minutes before and while applied", "effect")]
    for i, r in enumerate(rows):
        y = 8 + i * lane_h
        before = float(r["call_seconds_before"] or 0.0) / 60
        after = float(r["call_seconds_after"] or 0.0) / 60
        leak = r["leakage"]
        colour = AFTER_COLOURS.get(str(r["action"]), GOOD)
        bh = (lane_h - 10) / 2
        out.append(
            f'<line x1="{name_w}" x2="{name_w + pw}" y1="{y + lane_h - 3}" y2="{y + lane_h - 3}" '
            f'stroke="{GRID}"/>'
            f'<text x="{name_w - 8}" y="{y + lane_h * 0.55:.1f}" class="lbl mono" '
            f'text-anchor="end">{text(r["rule_id"])}</text>'
            f'<rect x="{name_w}" y="{y + 2}" width="{max(before / top * pw, 0.5):.2f}" '
            f'height="{bh:.1f}" fill="{MUTED}"><title>{text(r["rule_id"])}: '
            f"{compact(before)} call minutes before</title></rect>"
            f'<rect x="{name_w}" y="{y + 2 + bh:.1f}" width="{max(after / top * pw, 0.5):.2f}" '
            f'height="{bh:.1f}" fill="{colour}"><title>{text(r["rule_id"])}: '
            f"{compact(after)} call minutes while applied</title></rect>"
            f'<text x="{W - 8}" y="{y + lane_h * 0.55:.1f}" class="lbl" text-anchor="end">'
            f"{text(effect_word(str(r['action'])))} {text(pct(leak))}</text>"
            f'<g class="effect-mark" data-rule={attr(r["rule_id"])} '
            f"data-before={attr(repr(before))} data-after={attr(repr(after))} "
            f"data-leakage={attr('' if leak is None else repr(float(leak)))}></g>"
        )
    out.append(
        legend(
            [("before", MUTED), ("while applied (block)", AFTER_COLOURS["block"]),
             ("while applied (other)", GOOD)],
            name_w,
            height - 8,
            W - name_w,
        )
    )  # fmt: skip
    out.append("</svg>")
    return "".join(out)
