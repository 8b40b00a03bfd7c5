"""Where producers connect: the hub's listening sockets, the key and checker of each, and whether
the selector polls them.

The accepting itself is :class:`.peers.Peers`' (it makes a connection of each socket). Here: the
sockets, which key a peer of each must prove (``serve_ranks`` may set its own) and which checker
parses its records, and the pause while descriptors are short (:mod:`.fdbudget`): the listeners
are unregistered, not polled in vain, and the kernel's backlog keeps who connects meanwhile.
"""

from __future__ import annotations

import os
import selectors
import socket
from collections.abc import Callable
from typing import Any

from .. import _wire
from .fdbudget import FdBudget
from .guard import Guard

__all__ = ["Listeners", "tcp_listener", "unix_listener"]

_BACKLOG = min(socket.SOMAXCONN, 4096)  # hundreds of workers may connect at once at start
_RESUME_ROOM = 16  # free descriptors (beyond the reserve) before a paused hub accepts again


class Listeners:
    """The listening sockets of one hub (``socks``), polled while ``listening``."""

    __slots__ = ("socks", "_keys", "_checkers", "_sel", "_on_accept", "_guard", "budget", "listening")

    def __init__(
        self, sel: selectors.BaseSelector, on_accept: Callable[[Any, int], None], guard: Guard
    ) -> None:
        self.socks: list[socket.socket] = []
        self._keys: dict[socket.socket, bytes] = {}  # listeners whose key is not the hub's
        self._checkers: dict[socket.socket, _wire.EventChecker] = {}  # listeners of store readers
        self._sel = sel
        self._on_accept = on_accept
        self._guard = guard
        self.budget = FdBudget()
        self.listening = True  # False while the listeners are unregistered (descriptors low)

    def add(self, sock: socket.socket, key: bytes | None, checker: _wire.EventChecker | None) -> None:
        self.socks.append(sock)
        if key is not None:
            self._keys[sock] = key
        if checker is not None:
            self._checkers[sock] = checker
        if self.listening:
            self._sel.register(sock, selectors.EVENT_READ, self._on_accept)

    def key(self, sock: socket.socket, default: bytes) -> bytes:
        """The key a peer that came through ``sock`` must prove."""
        return self._keys.get(sock, default)

    def checker(self, sock: socket.socket) -> _wire.EventChecker | None:
        """What parses the records of a peer that came through ``sock`` (None: nothing)."""
        return self._checkers.get(sock)

    def pause(self) -> None:
        """Stop accepting: the backlog keeps who connects meanwhile, until :meth:`resume`."""
        if not self.listening:
            return
        self.listening = False
        for listener in self.socks:
            try:
                self._sel.unregister(listener)
            except (KeyError, ValueError):
                pass
        self._guard.paused(self.budget.limit, self.budget.reserve)

    def resume(self) -> None:
        """Accept again if descriptors freed (after a connection closed, and once a second)."""
        if self.listening or not self.socks or self.budget.room() < _RESUME_ROOM:
            return
        self.listening = True
        for listener in self.socks:
            self._sel.register(listener, selectors.EVENT_READ, self._on_accept)

    def stop(self) -> None:
        for listener in self.socks:
            try:
                self._sel.unregister(listener)
            except (KeyError, ValueError):
                pass
            listener.close()
        self.socks.clear()


def unix_listener(address: str) -> socket.socket:
    try:
        os.unlink(address)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket file is 0600 from birth, not after a chmod race
    try:
        sock.bind(address)
    finally:
        os.umask(old_umask)
    sock.listen(_BACKLOG)
    sock.setblocking(False)
    return sock


def tcp_listener(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
