"""The flags of one ``voipflow demo`` run, as the command parsed and checked them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DemoOptions:
    """What the user asked of this run; settings (``VOIPFLOW_*``) are apart.

    The defaults are the command's; ``voipflow demo --help`` explains them.
    """

    #: Seconds of simulated traffic.
    duration_s: float = 120.0
    #: Flow records per second the simulated routers export.
    rate: float = 1000.0
    #: Usage window width given to the worker (production uses 60 s).
    window_s: int = 20
    #: Simulator seed.
    seed: int = 1
    #: Export format: NetFlow v5, v9 or IPFIX (10).
    version: int = 10
    #: 1-in-N packet sampling of the simulated routers.
    sampling: int = 1
    #: Seconds between progress lines.
    progress_s: float = 5.0
    #: Where to write the final figures as JSON, if anywhere.
    json_out: Path | None = None
    #: Policy file or folder: also run the evaluator, the ledger and an
    #: enforcement point, and show the rules beside the table (None: not).
    policy: Path | None = None
    #: The enforcement point's backend with ``policy``: ``log`` or ``nftables``.
    enforce_backend: str = "log"
