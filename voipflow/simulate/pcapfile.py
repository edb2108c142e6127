"""Write export datagrams into a pcap file (Ethernet / IPv4 / UDP).

``voipflow simulate --pcap FILE`` keeps what it sends in a capture, so the
same stream can be fed to ``tshark``, ``voipflow decode`` or ``tcpreplay``.
Only what those readers need is written: a classic libpcap header, Ethernet
II frames, IPv4 headers with a correct checksum and UDP with checksum 0 (RFC
768: "no checksum").
"""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

_PCAP_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")
_ETHERNET = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
LINKTYPE_ETHERNET = 1


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f">{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class PcapWriter:
    """Appends UDP datagrams as Ethernet frames to a new pcap file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh: BinaryIO = self.path.open("wb")
        self._fh.write(_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
        self._ip_id = 0
        self.packets = 0

    def write(
        self,
        ts_ms: int,
        src: tuple[str, int],
        dst: tuple[str, int],
        payload: bytes,
    ) -> None:
        """One datagram from ``src`` (address, port) to ``dst`` at ``ts_ms``."""
        src_ip = ipaddress.IPv4Address(src[0]).packed
        dst_ip = ipaddress.IPv4Address(dst[0]).packed
        udp = struct.pack(">HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        ip = struct.pack(
            ">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), self._ip_id, 0x4000, 64, 17, 0, src_ip, dst_ip
        )
        ip = ip[:10] + struct.pack(">H", _ip_checksum(ip)) + ip[12:]
        frame = _ETHERNET + ip + udp
        secs, ms = divmod(ts_ms, 1000)
        self._fh.write(_RECORD_HEADER.pack(secs, ms * 1000, len(frame), len(frame)))
        self._fh.write(frame)
        self.packets += 1

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
