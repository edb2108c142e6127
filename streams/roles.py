"""The second verdict per flow: what part of a call it plays (its ``role``).

The classifier's first verdict, ``app``, says which calling application a
flow belongs to, whatever it does for the call: that is what the label rule
measures and what enforcement targets. Usage needs more: only the flows that
carry a call's audio or video stand for call-seconds, not the app's TLS
control connections, its SIP dialogs or its ICE checks. The role says which.

Roles (names and meanings: :data:`voipflow.schemas.voipflows.ROLES`), each from
what the protocol documents say of a flow's transport, ports and shape. They
are decided only for flows the classifier called VoIP (others get code 0,
``""``); later steps override earlier ones:

1. ``control``: every VoIP flow to begin with. What is neither UDP nor
   signalling is the app's own channel to its servers (TLS over TCP, the
   label rule's "signalling over TLS" that carries no call set-up protocol
   the classifier can see): no media.
2. ``media``: VoIP over UDP with voice- or video-sized packets (RTP keeps a
   packet to one frame or a share of one under the path MTU, RFC 3550,
   RFC 3551 s. 4.2). UDP VoIP flows of other sizes stay ``control``
   (keep-alives of a few bytes), except:
3. ``ice``: UDP flows of STUN's wire size that are smaller than any voice
   packet (48-50 bytes: a bare 20-byte STUN header over UDP/IPv4, RFC 8489
   s. 5, a binding request without attributes), and short UDP flows of
   STUN's shape (RFC 8489 s. 5-6: 20-byte header plus attributes, one
   response per request; RFC 8445 s. 7 connectivity checks, RFC 7675
   consent freshness), i.e. a few paired packets of 48-200 bytes that
   never became a stream. RFC 7983 multiplexes STUN, DTLS and SRTP on one
   5-tuple, so a flow that outlasts its checks is media.
4. ``relay`` / ``ice`` on the STUN/TURN ports (3478-3481, 5349: RFC 8489,
   RFC 8656 s. 18; Microsoft 365 names 3478-3481 the Teams transport
   relays): a media stream there is media through a TURN relay (Send/Data
   indications or ChannelData, RFC 8656 s. 11-12), anything else on them is
   a STUN exchange (binding, allocation, refresh). Over TCP (TURN-TCP,
   RFC 6062) the stream test is size and duration: TCP has no packet rate
   of its own. Google's STUN ports 19302-19309 serve STUN and are Meet's
   media servers (Meet's network guide), not TURN relays: what is no
   stream there is ``ice``, their streams stay ``media``.
5. ``control``: RTCP beside its RTP (RFC 3550 s. 6, "RTP control protocol",
   on the odd port next to RTP's, s. 11): reports, no media.
6. ``signalling``: call signalling on its registered port (SIP RFC 3261,
   H.225.0 and H.245 of ITU-T H.323, SCCP, MGCP RFC 3435, IAX2 RFC 5456),
   the classifier's rule R1, and H.245 between H.225 peers (rule R7).

Everything is whole-array numpy work on masks the classifier already has:
no Python per record.
"""

from __future__ import annotations

import numpy as np

from voipflow.schemas.voipflows import MEDIA_ROLES, ROLES

#: Role names by code (code 0: not VoIP / unknown).
ROLE_NAMES: tuple[str, ...] = ("", *ROLES)
ROLE_CODE: dict[str, int] = {name: i for i, name in enumerate(ROLE_NAMES)}
R_NONE = 0
R_SIGNALLING = ROLE_CODE["signalling"]
R_CONTROL = ROLE_CODE["control"]
R_MEDIA = ROLE_CODE["media"]
R_RELAY = ROLE_CODE["relay"]
R_ICE = ROLE_CODE["ice"]
#: Per role code: does the flow carry a call's media (counts call-seconds)?
CARRIES_MEDIA: np.ndarray = np.array([name in MEDIA_ROLES for name in ROLE_NAMES], dtype=bool)


def assign_roles(
    is_voip: np.ndarray,
    udp: np.ndarray,
    tcp: np.ndarray,
    sized: np.ndarray,
    stream: np.ndarray,
    lasting: np.ndarray,
    stun_sized: np.ndarray,
    stun_shape: np.ndarray,
    stun_port: np.ndarray,
    turn_port: np.ndarray,
    rtcp: np.ndarray,
    signalling: np.ndarray,
) -> np.ndarray:
    """Role code per record (``uint8``, index into :data:`ROLE_NAMES`).

    All arguments are boolean masks over the batch: ``sized`` voice- or
    video-sized mean packets, ``stream`` the classifier's media statistics
    (sized, at a media rate, lasting), ``lasting`` the classifier's LONG,
    ``stun_sized`` mean packets of STUN's wire size below any voice packet
    (48-50 bytes: a bare STUN header),
    ``stun_shape`` STUN-sized paired few-packet exchanges, ``stun_port`` any
    STUN port (with Google's) and ``turn_port`` the STUN/TURN ports
    3478-3481/5349, each deciding the flow's port category,
    ``rtcp`` RTCP flows beside their RTP, ``signalling`` call signalling
    (rules R1 and H.245). The steps are the module docstring's.
    """
    role = np.zeros(len(is_voip), dtype=np.uint8)
    rows = np.flatnonzero(is_voip)  # the work is on the VoIP rows only
    if not len(rows):
        return role
    u, t, size, last = udp[rows], tcp[rows], sized[rows], lasting[rows]
    r = np.full(len(rows), R_CONTROL, dtype=np.uint8)
    r[u & size] = R_MEDIA
    r[u & stun_sized[rows]] = R_ICE
    r[u & stun_shape[rows] & ~last] = R_ICE
    r[stun_port[rows] & (u | t) & ~(u & stream[rows])] = R_ICE
    at_turn = turn_port[rows] & (u | t)
    r[at_turn & ((u & stream[rows]) | (t & size & last))] = R_RELAY
    r[rtcp[rows]] = R_CONTROL
    r[signalling[rows]] = R_SIGNALLING
    role[rows] = r
    return role
