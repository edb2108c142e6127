"""The nftables backend: the rules in force as sets and chains of one table voipflow owns.

Every batch is one ``nft -f -`` process, so one kernel transaction: all of it
applies or none does, and a batch of 50,000 prefixes costs one process, not
50,000 (the table layout is in :mod:`.nftscript`). State is read back with
``nft -j list table``, so what the reconciler compares with is what the
kernel holds, hand edits and restarts included.

With ``nft_netns`` set the commands run in that network namespace through
``ip netns exec`` (a router namespace, or the tests' namespaces).
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from voipflow.enforcement.points.backend import Batch, State
from voipflow.enforcement.points.config import EnforceConfig
from voipflow.enforcement.points.desired import Network, Rule
from voipflow.enforcement.points.errors import BackendError, BackendUnavailable
from voipflow.enforcement.points.nftscript import (
    Parts,
    parse_state,
    render_add,
    render_base,
    render_remove,
)

log = logging.getLogger(__name__)

#: Seconds one nft process may take (a batch of 100,000 elements takes a few).
NFT_TIMEOUT_S = 120.0


class NftBackend:
    name = "nftables"

    def __init__(self, config: EnforceConfig, never_block: Sequence[Network] = ()) -> None:
        """``never_block``: the guardrails' prefixes, exempt in the base chain."""
        self.config = config
        self.table = config.nft_table
        self.hook = config.nft_hook
        self.never_block = list(never_block)
        prefix = ["ip", "netns", "exec", config.nft_netns] if config.nft_netns else []
        self._cmd = [*prefix, config.nft_bin]

    # -- running nft ----------------------------------------------------------

    def _nft(self, args: list[str], script: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [*self._cmd, *args],
                input=script,
                capture_output=True,
                text=True,
                timeout=NFT_TIMEOUT_S,
                check=False,
            )
        except FileNotFoundError as exc:
            raise BackendUnavailable(
                f"{self._cmd[0]} not found: install nftables or set VOIPFLOW_ENFORCE_NFT_BIN"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise BackendError(f"nft {' '.join(args)} took more than {NFT_TIMEOUT_S} s") from exc

    def start(self) -> None:
        res = self._nft(["list", "tables"])
        if res.returncode != 0:
            err = res.stderr.strip()
            hint = "run as root or with CAP_NET_ADMIN"
            if self.config.nft_netns:
                hint += f"; check VOIPFLOW_ENFORCE_NFT_NETNS={self.config.nft_netns} exists"
            raise BackendUnavailable(f"{' '.join(self._cmd)} list tables failed: {err} ({hint})")

    def stop(self) -> None:
        """Nothing to release; the table stays so traffic stays filtered while we are away."""

    # -- the backend ----------------------------------------------------------

    def read(self) -> dict[str, Any] | None:
        """``nft -j list table`` parsed; None when the table does not exist."""
        res = self._nft(["-j", "list", "table", "inet", self.table])
        if res.returncode != 0:
            if "No such file or directory" in res.stderr:
                return None
            raise BackendError(f"nft list table inet {self.table} failed: {res.stderr.strip()}")
        try:
            doc: dict[str, Any] = json.loads(res.stdout)
        except ValueError as exc:
            raise BackendError(f"nft -j printed something that is not JSON: {exc}") from exc
        return doc

    def installed(self, desired: Mapping[str, Rule], now_ms: int) -> State:
        return parse_state(
            self.read(),
            self.hook,
            self.never_block,
            desired,
            now_ms,
            int(self.config.nft_expiry_grace_s * 1000),
        )

    def script(self, batch: Batch, now_ms: int) -> str:
        """The whole batch as one nft script (one transaction)."""
        out = []
        if batch.base:
            out.append(render_base(self.table, self.hook, self.never_block))
        for inst in batch.remove:
            if not batch.base and isinstance(inst.parts, Parts):
                out.append(render_remove(self.table, inst.handle, inst.parts))
        for rule in batch.add:
            out.append(render_add(self.table, rule, now_ms))
        return "".join(out)

    def apply(self, batch: Batch, now_ms: int) -> None:
        script = self.script(batch, now_ms)
        if not script:
            return
        res = self._nft(["-f", "-"], script)
        if res.returncode != 0:
            raise BackendError(_first_error(res.stderr))
        log.debug(
            "nft batch applied",
            extra={"add": len(batch.add), "remove": len(batch.remove), "base": batch.base},
        )


def _first_error(stderr: str) -> str:
    """The first ``Error:`` line of nft's output, with the offending command."""
    lines = stderr.strip().splitlines()
    for i, line in enumerate(lines):
        if "Error:" in line:
            cmd = lines[i + 1].strip() if i + 1 < len(lines) else ""
            return f"{line.split('Error:', 1)[1].strip()} in: {cmd[:200]}"
    return stderr.strip()[:500] or "nft failed without a message"
