"""Options of every producer<->hub TCP connection, set on both ends."""

from __future__ import annotations

import socket

__all__ = ["TCP_USER_TIMEOUT_MS", "tune_tcp"]

#: ms a TCP peer may leave sent data unacknowledged before the connection counts as dead. ACKs
#: come from the peer's kernel, not its (possibly busy) Python, so only a dead host or a cut link
#: goes this long without one; without the bound Linux retransmits for ~15 minutes, and a closing
#: hub would wait its whole close timeout for a node that died.
TCP_USER_TIMEOUT_MS = 5_000
_KEEPALIVE = (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 2))  # s, s, probes


def tune_tcp(sock: socket.socket) -> None:
    """Options of every producer<->hub TCP connection, on both ends (never raises).

    No Nagle delay; a peer whose host died or whose link was cut is detected within seconds,
    both while data is in flight (``TCP_USER_TIMEOUT``) and while idle (keepalive), so its file
    descriptor, run and close-time wait are released.
    """
    for level, name, value in (
        (socket.IPPROTO_TCP, "TCP_NODELAY", 1),
        (socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
        *((socket.IPPROTO_TCP, n, v) for n, v in _KEEPALIVE),
        (socket.IPPROTO_TCP, "TCP_USER_TIMEOUT", TCP_USER_TIMEOUT_MS),
    ):
        option = getattr(socket, name, None)
        if option is None:
            continue  # not on this platform
        try:
            sock.setsockopt(level, option, value)
        except OSError:
            pass
