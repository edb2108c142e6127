"""Score the role verdict: ground truth from the labels, per-role and media-level figures.

The corpus labels (``labels.csv``) say whether a flow is VoIP and name the
protocol nDPI recognised (``ndpi_proto``, ``MASTER.APP`` or ``MASTER``). They
carry no role column, so a flow's true role is derived only where that
protocol name says it, and nowhere else:

=================================  =============  ==============================
``ndpi_proto`` master              true role      why
=================================  =============  ==============================
RTP, SRTP                          media          RFC 3550, RFC 3711
RTCP                               control        RFC 3550 s. 6: reports, no media
SIP, H323, CiscoSkinny, MGCP,      signalling     RFC 3261, ITU-T H.225.0/H.245,
Megaco                                            SCCP, RFC 3435, RFC 3525
TLS (VoIP-labelled: the app's      control        the app's servers; the label
own TLS)                                          rule counts it as the app's
STUN, DTLS                         ice or media   nDPI names a flow by the first
                                                  protocol it recognises, and
                                                  RFC 7983 multiplexes STUN,
                                                  DTLS and SRTP on one 5-tuple:
                                                  a STUN-labelled flow may have
                                                  become the media path
anything else VoIP (Zoom, Viber,   unknown        the label names the app only
IAX, Discord, ...)                                (IAX2 carries signalling and
                                                  media in one flow)
not VoIP                           none
=================================  =============  ==============================

Labels with a ``role`` column (the held-out captures, labelled by
construction: ``voipflow/evaluation/heldout/traffic.py`` ``KIND_ROLES``)
state the role themselves; that column wins where it names one.

Per record (matched to a labelled flow), the figures are:

* per role: each true role's records and what the classifier called them
  (``""`` = not VoIP), and the share it got right (``ice or media`` is right
  as ice, media or relay);
* media-level precision, recall and F1: does the record carry a call's media
  (role media or relay, predicted and true)? Over the records whose truth
  decides it (media, relay, signalling, control, ice and non-VoIP);
  ``ice or media`` and ``unknown`` ones are left out, they can be neither
  right nor wrong. The same per labelled
  flow (a flow carries media when any of its records does).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from voipflow.schemas.voipflows import MEDIA_ROLES, ROLES
from voipflow.streams import evaluate as ev

ICE_OR_MEDIA = "ice or media"
UNKNOWN = "unknown"
NONE = "none"
#: ``ndpi_proto`` master protocol -> the role it states.
MASTER_ROLES: dict[str, str] = {
    "RTP": "media",
    "SRTP": "media",
    "RTCP": "control",
    "SIP": "signalling",
    "H323": "signalling",
    "CiscoSkinny": "signalling",
    "MGCP": "signalling",
    "Megaco": "signalling",
    "TLS": "control",
    "STUN": ICE_OR_MEDIA,
    "DTLS": ICE_OR_MEDIA,
}
#: Rows of the per-role table, in print order.
TRUTH_ROLES: tuple[str, ...] = (*ROLES, ICE_OR_MEDIA, UNKNOWN, NONE)


def role_truth(labels: ev.Labels) -> np.ndarray:
    """True role per labelled flow (object array of :data:`TRUTH_ROLES`): the
    labels' own ``role`` where they have one (held-out captures, by
    construction), else what the protocol name states."""
    out = np.array(
        [MASTER_ROLES.get(p.split(".", 1)[0].strip(), UNKNOWN) for p in labels.ndpi_proto],
        dtype=object,
    )
    if labels.role:
        own = np.array(labels.role, dtype=object)
        named = np.isin(own, list(ROLES))
        out[named] = own[named]
    out[~labels.is_voip] = NONE
    return out


def _media_prf(pred: np.ndarray, truth_role: np.ndarray) -> dict[str, Any]:
    decided = ~np.isin(truth_role, (ICE_OR_MEDIA, UNKNOWN))
    truth = np.isin(truth_role, MEDIA_ROLES)  # media, directly or through a relay
    out = ev.prf(pred[decided], truth[decided])
    out["decided"] = int(np.count_nonzero(decided))
    out["media_truth"] = int(np.count_nonzero(truth))
    return out


def score_roles(label_idx: np.ndarray, role: np.ndarray, labels: ev.Labels) -> dict[str, Any]:
    """Per-role table and media-level P/R/F1 of one run (``role``: names per record)."""
    truth_flow = role_truth(labels)
    role = np.asarray(role, dtype=object)
    matched = label_idx >= 0
    pred = role[matched]
    truth = truth_flow[label_idx[matched]]
    media_pred = np.isin(pred, MEDIA_ROLES)
    per_role: dict[str, Any] = {}
    for t in TRUTH_ROLES:
        rows = truth == t
        if not rows.any():
            continue
        got = {
            name or "not_voip": int(np.count_nonzero(rows & (pred == name)))
            for name in ("", *ROLES)
        }
        if t == ICE_OR_MEDIA:
            right = rows & np.isin(pred, ("ice", *MEDIA_ROLES))
        elif t == NONE:
            right = rows & (pred == "")
        elif t == UNKNOWN:
            right = np.zeros(len(rows), dtype=bool)
        else:
            right = rows & (pred == t)
        per_role[t] = {
            "records": int(np.count_nonzero(rows)),
            "predicted": {k: v for k, v in got.items() if v},
            "right": int(np.count_nonzero(right)) if t != UNKNOWN else None,
        }
    flow_media = np.zeros(len(labels), dtype=bool)
    np.logical_or.at(flow_media, label_idx[matched], media_pred)
    seen = np.zeros(len(labels), dtype=bool)
    seen[label_idx[matched]] = True
    return {
        "media_per_record": _media_prf(media_pred, truth),
        "media_per_flow": _media_prf(flow_media[seen], truth_flow[seen]),
        "per_role": per_role,
        "truth_flows": {
            t: int(np.count_nonzero(truth_flow == t))
            for t in TRUTH_ROLES
            if (truth_flow == t).any()
        },
    }
