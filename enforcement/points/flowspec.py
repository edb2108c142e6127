"""The FlowSpec backend: rules as BGP FlowSpec routes (RFC 8955/8956) announced by GoBGP.

GoBGP (Debian ``gobgpd``) speaks BGP; this module drives it with its ``gobgp``
command line. With ``bgp_api`` empty the point starts its own gobgpd, peered
with ``bgp_peer`` for ipv4-flowspec and ipv6-flowspec; otherwise it uses the
gobgpd whose gRPC API is at ``bgp_api``.

A rule becomes one route per prefix and side (FlowSpec has one destination
and one source prefix per route; the contract matches either side), each with
the rule's protocol and ports (the ``port`` component matches source or
destination port, as the contract does). Actions: ``discard`` for a block,
``traffic-rate`` (``rate-limit``, bytes per second) for a throttle, and
``traffic-action sample`` (accept, sample) for shadow mode, monitor and alert.

Every route carries two large communities, ``<local AS>:<id hi>:<id lo>``
(the rule's handle) and ``<local AS>:<version>:<digest>``; reading the RIB
back tells which rule each route belongs to, which is how restarts and
drift are reconciled. Routes without them are not ours and are left alone.
Two rules asking for the same match share one route: the stronger action
(discard, then the lower rate, then sample) owns it.

The router withdraws every route when the BGP session ends, so a stopped
point stops filtering; a restarted one announces the rules in force again.
"""

from __future__ import annotations

import ctypes
import json
import logging
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voipflow.enforcement.points.backend import Batch, Installed, State
from voipflow.enforcement.points.config import EnforceConfig, host_port
from voipflow.enforcement.points.desired import Rule
from voipflow.enforcement.points.errors import BackendError, BackendUnavailable

log = logging.getLogger(__name__)

_PROTO = {"udp": 17, "tcp": 6}
_EQ, _GT, _LT, _AND = 0x01, 0x02, 0x04, 0x40
_OPS = {_EQ: "==", _GT | _EQ: ">=", _LT | _EQ: "<=", _GT: ">", _LT: "<", _LT | _GT: "!="}
#: gobgp's session state for an established BGP session (its API enum).
SESSION_ESTABLISHED = 6
#: Concurrent gobgp processes per batch (each is one gRPC call).
WORKERS = 8


@dataclass(frozen=True, slots=True)
class Route:
    """One FlowSpec route: its family, match (gobgp words) and canonical NLRI key."""

    afi: str
    match: tuple[str, ...]
    key: tuple[Any, ...]

    @property
    def family(self) -> str:
        return f"{self.afi}-flowspec"


def action_of(rule: Rule) -> tuple[Any, ...]:
    if not rule.drops:
        return ("sample",)
    if rule.action == "block":
        return ("discard",)
    return ("rate", rule.rate_bytes_per_s)


def _strength(action: tuple[Any, ...]) -> tuple[int, int]:
    """Sort key: discard first, then the lowest rate, then sample."""
    if action[0] == "discard":
        return (0, 0)
    if action[0] == "rate":
        return (1, int(action[1]))
    return (2, 0)


def _then(action: tuple[Any, ...]) -> list[str]:
    if action[0] == "discard":
        return ["discard"]
    if action[0] == "rate":
        return ["rate-limit", str(action[1])]
    return ["accept", "action", "sample"]


def routes_of(rule: Rule) -> list[Route]:
    words: list[str] = []
    keys: list[Any] = []
    if rule.protocol != "any":
        words += ["protocol", rule.protocol]
        keys.append((3, ((_PROTO[rule.protocol], _EQ),)))
    if rule.ports:
        items, ops = [], []
        for lo, hi in rule.ports:
            if lo == hi:
                items.append(f"=={lo}")
                ops.append((lo, _EQ))
            else:
                items.append(f">={lo}&<={hi}")
                ops += [(lo, _GT | _EQ), (hi, _AND | _LT | _EQ)]
        words += ["port", *items]
        keys.append((4, tuple(ops)))
    out = []
    for afi, nets in (("ipv4", rule.v4), ("ipv6", rule.v6)):
        for net in nets:
            for t, side in ((1, "destination"), (2, "source")):
                out.append(Route(afi, (side, str(net), *words), ((t, str(net)), *keys)))
    if not rule.v4 and not rule.v6:
        out += [Route(afi, tuple(words), tuple(keys)) for afi in ("ipv4", "ipv6")]
    return out


def _key_of(nlri: Iterable[Mapping[str, Any]]) -> tuple[tuple[Any, ...], tuple[str, ...]]:
    """Canonical key and gobgp match words of an NLRI read from ``gobgp -j``."""
    keys: list[Any] = []
    words: list[str] = []
    for comp in nlri:
        t, val = comp["type"], comp["value"]
        if t in (1, 2):
            keys.append((t, val["prefix"]))
            words += ["destination" if t == 1 else "source", val["prefix"]]
        else:
            ops = tuple((int(i["value"]), int(i["op"]) & (_AND | _LT | _GT | _EQ)) for i in val)
            keys.append((t, ops))
            name = {3: "protocol", 4: "port", 5: "destination-port", 6: "source-port"}.get(t)
            if name is None:
                continue
            items: list[str] = []
            for value, op in ops:
                text = _OPS.get(op & ~_AND, "==") + str(value)
                if op & _AND and items:
                    items[-1] += "&" + text
                else:
                    items.append(text)
            words += [name, *items]
    return tuple(keys), tuple(words)


def _action_from(attrs: Iterable[Mapping[str, Any]]) -> tuple[Any, ...] | None:
    for attr in attrs:
        if attr.get("type") != 16:
            continue
        for ext in attr.get("value", []):
            if ext.get("subtype") == 6:
                rate = int(ext.get("rate", 0))
                return ("discard",) if rate == 0 else ("rate", rate)
            if ext.get("subtype") == 7 and ext.get("sample"):
                return ("sample",)
    return None


def _tags(attrs: Iterable[Mapping[str, Any]], asn: int) -> tuple[str, int, str] | None:
    """(handle, version, digest prefix) from our large communities, None when not ours."""
    for attr in attrs:
        if attr.get("type") != 32:
            continue
        ours = [c for c in attr.get("value", []) if c.get("ASN") == asn]
        if len(ours) != 2:
            return None
        ident, ver = ours
        handle = f"r{int(ident['LocalData1']):07x}{int(ident['LocalData2']):08x}"
        return handle, int(ver["LocalData1"]), f"{int(ver['LocalData2']):08x}"
    return None


def _communities(rule: Rule, asn: int) -> str:
    h = rule.handle[1:]
    ident = f"{asn}:{int(h[:7], 16)}:{int(h[7:], 16)}"
    return f"{ident},{asn}:{rule.version & 0xFFFFFFFF}:{int(rule.digest[:8], 16)}"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the speaker gets SIGTERM when the point dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class FlowSpecBackend:
    name = "flowspec"

    def __init__(self, config: EnforceConfig) -> None:
        self.config = config
        self.asn = config.bgp_local_as
        #: gobgp's ``--target``: the configured API, or our speaker's socket.
        self._target = ""
        if config.bgp_api:
            host, port = host_port(config.bgp_api, 50051)
            self._target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._speaker: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        #: peer address -> session established, as last logged.
        self._sessions: dict[str, bool] = {}
        #: route key -> handle of the rule that owns it, from the last read.
        self._owner: dict[tuple[str, tuple[Any, ...]], str] = {}

    # -- the speaker ----------------------------------------------------------

    def start(self) -> None:
        if shutil.which(self.config.bgp_gobgp) is None:
            raise BackendUnavailable(
                f"{self.config.bgp_gobgp} not found: install gobgpd or set "
                "VOIPFLOW_ENFORCE_BGP_GOBGP"
            )
        if not self._target:
            self._start_speaker()
        self._wait_api()

    def _start_speaker(self) -> None:
        if not self.config.bgp_peer:
            raise BackendUnavailable(
                "VOIPFLOW_ENFORCE_BGP_PEER is empty: set the router's address (or "
                "VOIPFLOW_ENFORCE_BGP_API to use a running gobgpd)"
            )
        if shutil.which(self.config.bgp_gobgpd) is None:
            raise BackendUnavailable(
                f"{self.config.bgp_gobgpd} not found: install gobgpd (Debian) or set "
                "VOIPFLOW_ENFORCE_BGP_GOBGPD"
            )
        peer, port = host_port(self.config.bgp_peer, 179)
        self._dir = Path(tempfile.mkdtemp(prefix="voipflow-gobgpd-"))
        conf = self._dir / "gobgpd.toml"
        conf.write_text(
            _speaker_config(
                self.asn, self.config.bgp_router_id, peer, port, self.config.bgp_peer_as
            )
        )
        # The API on a unix socket in our own folder: no port to pick or to collide on.
        self._target = f"unix://{self._dir / 'api.sock'}"
        log_file = open(self._dir / "gobgpd.log", "wb")  # noqa: SIM115
        self._speaker = subprocess.Popen(
            [
                self.config.bgp_gobgpd,
                "-f",
                str(conf),
                "--api-hosts",
                self._target,
                "--pprof-disable",
                "-l",
                "warn",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        log_file.close()
        log.info(
            "gobgpd started",
            extra={"peer": f"{peer}:{port}", "api": self._target, "pid": self._speaker.pid},
        )

    def _wait_api(self, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            res = self._gobgp(["global"], check=False)
            if res.returncode == 0:
                return
            if self._speaker is not None and self._speaker.poll() is not None:
                raise BackendUnavailable(f"gobgpd exited at start: {self._speaker_log()}")
            if time.monotonic() > deadline:
                raise BackendUnavailable(
                    f"no gobgpd API at {self._target} within {timeout_s:.0f} s: "
                    f"{res.stderr.strip()[:300]} (VOIPFLOW_ENFORCE_BGP_API)"
                )
            time.sleep(0.2)

    def _speaker_log(self) -> str:
        if self._dir is None:
            return ""
        try:
            return (self._dir / "gobgpd.log").read_text()[-500:].strip()
        except OSError:
            return ""

    def stop(self) -> None:
        if self._speaker is not None and self._speaker.poll() is None:
            self._speaker.terminate()
            try:
                self._speaker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._speaker.kill()
                self._speaker.wait()
        self._speaker = None
        if self._dir is not None and not self.config.bgp_api:
            self._target = ""
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _gobgp(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [self.config.bgp_gobgp, "--target", self._target, *args]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BackendError(f"gobgp {' '.join(args[:4])} took more than 30 s") from exc
        if check and res.returncode != 0:
            err = (res.stderr or res.stdout).strip().splitlines()
            raise BackendError(f"gobgp {' '.join(args)}: {err[0] if err else 'failed'}"[:500])
        return res

    # -- the backend ----------------------------------------------------------

    def read(self) -> dict[tuple[str, tuple[Any, ...]], dict[str, Any]]:
        """Our routes in the speaker's RIB: (afi, key) -> handle, version, digest, action."""
        out: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
        for afi in ("ipv4", "ipv6"):
            res = self._gobgp(["-j", "global", "rib", "-a", f"{afi}-flowspec"])
            try:
                doc = json.loads(res.stdout or "{}")
            except ValueError as exc:
                raise BackendError(f"gobgp -j printed something that is not JSON: {exc}") from exc
            for paths in doc.values():
                for path in paths:
                    attrs = path.get("attrs", [])
                    tags = _tags(attrs, self.asn)
                    if tags is None:
                        continue
                    nlri = (path.get("nlri") or {}).get("value")
                    if nlri is None:
                        continue
                    key, words = _key_of(nlri)
                    out[(afi, key)] = {
                        "handle": tags[0],
                        "version": tags[1],
                        "digest": tags[2],
                        "action": _action_from(attrs),
                        "match": words,
                    }
        return out

    def _check_sessions(self) -> None:
        """Log when a BGP session goes down or comes up: routes only reach a live peer."""
        res = self._gobgp(["-j", "neighbor"], check=False)
        try:
            peers = json.loads(res.stdout or "[]") if res.returncode == 0 else []
        except ValueError:
            peers = []
        for peer in peers:
            state = peer.get("state", {})
            addr = state.get("neighbor_address", "?")
            up = state.get("session_state") == SESSION_ESTABLISHED
            if self._sessions.get(addr) != up:
                self._sessions[addr] = up
                if up:
                    log.info("BGP session established", extra={"peer": addr})
                else:
                    log.warning(
                        "BGP session not established: announced rules do not reach this peer",
                        extra={"peer": addr, "state": state.get("session_state")},
                    )

    def installed(self, desired: Mapping[str, Rule], now_ms: int) -> State:
        self._check_sessions()
        rib = self.read()
        # Who owns each route: the strongest action, then the smallest handle.
        owner: dict[tuple[str, tuple[Any, ...]], tuple[tuple[int, int], str]] = {}
        for handle, rule in desired.items():
            rank = (_strength(action_of(rule)), handle)
            for route in routes_of(rule):
                k = (route.afi, route.key)
                if k not in owner or (rank[0], rank[1]) < owner[k]:
                    owner[k] = (rank[0], handle)
        self._owner = {k: h for k, (_, h) in owner.items()}
        state = State()
        by_handle: dict[str, list[tuple[tuple[str, tuple[Any, ...]], dict[str, Any]]]] = {}
        for k, info in rib.items():
            by_handle.setdefault(info["handle"], []).append((k, info))
        for handle, routes in by_handle.items():
            first = routes[0][1]
            state.rules[handle] = Installed(
                handle=handle,
                rule_id=None,
                version=first["version"],
                digest=first["digest"],
                elements=len(routes),
                parts=[(k[0], k[1], info["match"]) for k, info in routes],
            )
        owning = set(self._owner.values())
        for handle, rule in desired.items():
            inst = state.rules.get(handle)
            if inst is None and handle not in owning:
                # Every route of this rule is announced by a stronger one: nothing to do.
                state.rules[handle] = Installed(handle, rule.rule_id, rule.version, rule.digest)
                continue
            if inst is None:
                continue
            # Installed digests are the first 8 hex digits of the rule's.
            if inst.digest == rule.digest[:8]:
                inst.digest = rule.digest
                inst.detail = self._damage(rule, rib)
                inst.intact = not inst.detail
        return state

    def _damage(self, rule: Rule, rib: Mapping[tuple[str, tuple[Any, ...]], Any]) -> str:
        want = [r for r in routes_of(rule) if self._owner.get((r.afi, r.key)) == rule.handle]
        missing = [r for r in want if (r.afi, r.key) not in rib]
        if missing:
            return f"{len(missing)} of {len(want)} FlowSpec routes missing from the RIB"
        wrong = [r for r in want if rib[(r.afi, r.key)]["action"] != action_of(rule)]
        if wrong:
            return f"{len(wrong)} FlowSpec routes carry another action"
        return ""

    def apply(self, batch: Batch, now_ms: int) -> None:
        calls: list[list[str]] = []
        adds: list[list[str]] = []
        announced = set()
        for rule in batch.add:
            then = [*_then(action_of(rule)), "large-community", _communities(rule, self.asn)]
            for route in routes_of(rule):
                owner = self._owner.get((route.afi, route.key), rule.handle)
                if owner != rule.handle:
                    continue  # a stronger rule announces this match
                announced.add((route.afi, route.key))
                adds.append(
                    ["global", "rib", "-a", route.family, "add", "match", *route.match,
                     "then", *then]
                )  # fmt: skip
        for inst in batch.remove:
            for afi, key, words in inst.parts or []:
                # A route announced again in this batch is replaced in place, not withdrawn.
                if (afi, key) not in announced:
                    calls.append(["global", "rib", "-a", f"{afi}-flowspec", "del", "match", *words])
        calls += adds
        if not calls:
            return
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            results = list(pool.map(lambda a: self._gobgp(a, check=False), calls))
        errors = [
            (args, res) for args, res in zip(calls, results, strict=True) if res.returncode != 0
        ]
        if errors:
            args, res = errors[0]
            err = (res.stderr or res.stdout).strip().splitlines()
            raise BackendError(
                f"{len(errors)} of {len(calls)} gobgp calls failed; first: "
                f"{' '.join(args[3:])}: {err[0] if err else 'failed'}"[:500]
            )


def _speaker_config(asn: int, router_id: str, peer: str, port: int, peer_as: int) -> str:
    families = "".join(
        f"  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n"
        f'      afi-safi-name = "{f}"\n'
        for f in ("ipv4-flowspec", "ipv6-flowspec")
    )
    return (
        "[global.config]\n"
        f"  as = {asn}\n"
        f'  router-id = "{router_id}"\n'
        "  port = -1\n"
        "[[neighbors]]\n"
        "  [neighbors.config]\n"
        f'    neighbor-address = "{peer}"\n'
        f"    peer-as = {peer_as}\n"
        "  [neighbors.transport.config]\n"
        f"    remote-port = {port}\n"
        "  [neighbors.timers.config]\n"
        "    connect-retry = 2\n"
        f"{families}"
    )
