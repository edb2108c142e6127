"""Enforcement points: apply the rules in force on ``rules.v1`` and say what they did.

An enforcement point (``voipflow enforce``) reads the compacted ``rules.v1``
topic from its start, keeps the latest valid version of every rule that has
not expired or been withdrawn (:mod:`.desired`), and makes one backend's
installed state equal to that set (:mod:`.reconcile`): nftables in the
point's own table (:mod:`.nftables`), BGP FlowSpec announcements through a
GoBGP speaker (:mod:`.flowspec`), or a line per action on stdout
(:mod:`.logbackend`). Every change, refusal, repaired drift and, periodically,
the hit counters are reported on ``rules-feedback.v1`` (:mod:`.service`).

Errors::

    EnforceError            anything this package raises
     +-- RefusedRule            a rule the point will not install (bad, or unsafe)
     +-- BackendError           the backend could not read or change its state
          +-- BackendUnavailable    the backend cannot run at all here (no nft,
                                    no speaker, no permission); fatal at start
"""

from __future__ import annotations

from voipflow.enforcement.points.errors import (
    BackendError,
    BackendUnavailable,
    EnforceError,
    RefusedRule,
)

__all__ = ["BackendError", "BackendUnavailable", "EnforceError", "RefusedRule"]
