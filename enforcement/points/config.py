"""Configuration of an enforcement point (``[enforce]``, ``VOIPFLOW_ENFORCE_*``)."""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Literal

from pydantic import BaseModel, Field, field_validator

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")


def parse_prefixes(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Comma-separated CIDR prefixes; host bits set are an error (say what was meant)."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        try:
            out.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not a CIDR prefix ({exc})") from exc
    return out


def host_port(text: str, default_port: int) -> tuple[str, int]:
    """``(address, port)`` of ``a.b.c.d``, ``a.b.c.d:p``, ``v6`` or ``[v6]:p``."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
        if port is None and rest:
            raise ValueError(f"{text!r}: expected [address]:port")
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        if not p.isdigit():
            raise ValueError(f"{text!r}: expected address:port")
        port = int(p)
    else:
        host, port = text, None
    ipaddress.ip_address(host)
    port = default_port if port is None else port
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: port out of range")
    return host, port


class EnforceConfig(BaseModel):
    #: ``log`` prints what it would do, ``nftables`` filters in this host's
    #: kernel, ``flowspec`` announces BGP FlowSpec routes to a router.
    #: ``--backend`` overrides it.
    backend: Literal["log", "nftables", "flowspec"] = "log"
    #: Stable name of this enforcement point in feedback; empty: the host name.
    point_id: str = ""
    #: Kafka consumer group of this point (offsets, lag); empty:
    #: ``voipflow-enforce-<point_id>``. Every point reads all partitions.
    group: str = ""
    #: Seconds between full comparisons of installed state with the rules in
    #: force; drift (a table deleted by hand) is repaired within this time.
    reconcile_s: float = Field(10.0, gt=0)
    #: Seconds between hit counter reports of the applied rules.
    hits_s: float = Field(30.0, gt=0)
    #: Most rules this point holds at once (0: no limit). New rules past it
    #: are refused and reported, so a runaway publisher cannot fill a router's
    #: filter memory; routers hold a few thousand FlowSpec routes.
    max_rules: int = Field(10000, ge=0)
    #: nftables: the table (family ``inet``) voipflow owns; nothing else in it survives.
    nft_table: str = "voipflow"
    #: nftables: the hook the table filters at (``forward`` on a router).
    nft_hook: Literal["forward", "input", "output", "prerouting"] = "forward"
    #: nftables: the nft program.
    nft_bin: str = "nft"
    #: nftables: network namespace the rules go into (``ip netns exec``);
    #: empty: the point's own.
    nft_netns: str = ""
    #: nftables: element timeouts below this many seconds are not
    #: repaired when found missing (the kernel may have expired them first).
    nft_expiry_grace_s: float = Field(2.0, ge=0)
    #: flowspec: ``host:port`` of a running gobgpd's gRPC API; empty: the point
    #: starts its own gobgpd with the peer below.
    bgp_api: str = ""
    #: flowspec: the gobgpd program (the BGP speaker the point starts).
    bgp_gobgpd: str = "gobgpd"
    #: flowspec: the gobgp program (the speaker's command line client).
    bgp_gobgp: str = "gobgp"
    #: flowspec: this speaker's AS number (also the first part of the large
    #: communities that tag its routes).
    bgp_local_as: int = Field(64512, ge=1, le=4294967295)
    #: flowspec: this speaker's BGP router id (an IPv4 address).
    bgp_router_id: str = "192.0.2.1"
    #: flowspec: the router that receives the announcements, ``address`` or
    #: ``address:port`` (port 179 by default).
    bgp_peer: str = ""
    #: flowspec: the router's AS number.
    bgp_peer_as: int = Field(64512, ge=1, le=4294967295)
    #: log: where the action lines go (``-`` for stdout, else a file appended to).
    log_output: str = "-"

    @field_validator("point_id")
    @classmethod
    def _check_point(cls, v: str) -> str:
        if v and not re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", v):
            raise ValueError("use 1-64 letters, digits and . _ : -")
        return v

    @field_validator("nft_table")
    @classmethod
    def _check_table(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("a table name is a letter then up to 31 letters, digits or _")
        return v

    @field_validator("bgp_router_id")
    @classmethod
    def _check_router_id(cls, v: str) -> str:
        ipaddress.IPv4Address(v)
        return v

    @field_validator("bgp_api", "bgp_peer")
    @classmethod
    def _check_address(cls, v: str) -> str:
        if v:
            host_port(v, 179)
        return v

    def point_name(self) -> str:
        return self.point_id or socket.gethostname()

    def group_name(self) -> str:
        return self.group or f"voipflow-enforce-{self.point_name()}"
