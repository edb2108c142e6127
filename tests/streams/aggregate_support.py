"""What the aggregation and traffic tests share: a batch's verdicts cut to a range of it."""

from __future__ import annotations

import numpy as np

from voipflow.streams.classify import Classification


def rows_of(result: Classification, lo: int, hi: int) -> Classification:
    """The verdicts of records ``lo:hi``; partners outside the range become none."""
    p = result.partner[lo:hi]
    partner = np.where((p >= lo) & (p < hi), p - lo, -1)
    return Classification(
        result.app_code[lo:hi],
        result.is_voip[lo:hi],
        result.confidence[lo:hi],
        result.evidence[lo:hi],
        partner,
        result.apps,
        result.role[lo:hi],
    )
