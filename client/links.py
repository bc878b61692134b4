"""Seeing a dead link in seconds: how the client and the proxy open their connections.

Usage:
    aiohttp.TCPConnector(socket_factory=socket_factory)        # aiohttp (the proxy, AsyncClient)
    session.mount("http://", LinkAdapter())                     # requests (Client)

A worker whose host loses its network answers nothing: no refusal, no reset. Without help a
request already sent to it waits out the whole timeout (the proxy's 60 s), and only then is tried
elsewhere. With TCP keepalive probes after 2 s of silence and a TCP user timeout (data unacknowledged
for DEAD_LINK_SECONDS), the kernel drops such a connection within about DEAD_LINK_SECONDS, and the
caller sees a broken connection it can retry on another worker at once. A busy but healthy worker's
kernel answers the probes, so a long inference is never cut short. New connections have
CONNECT_SECONDS to be accepted.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection

DEAD_LINK_SECONDS = 5
CONNECT_SECONDS = 2.0
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL = 2, 1


def socket_options() -> list[tuple[int, int, int]]:
    """(level, option, value) for a TCP socket that gives up on a silent peer after DEAD_LINK_SECONDS."""
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; macOS has only SO_KEEPALIVE with its own long defaults
        probes = max(1, (DEAD_LINK_SECONDS - KEEPALIVE_IDLE) // KEEPALIVE_INTERVAL)
        options += [
            (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE),
            (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL),
            (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, probes),
        ]
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        options.append((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, DEAD_LINK_SECONDS * 1000))
    return options


def socket_factory(addr_info: tuple[Any, ...]) -> socket.socket:
    """aiohttp's socket_factory: a non-blocking TCP socket with socket_options() set (those the kernel takes:
    a sandbox that refuses one still gets a working connection)."""
    family, kind, protocol = addr_info[:3]
    sock = socket.socket(family, kind, protocol)
    try:
        sock.setblocking(False)
        for level, option, value in socket_options():
            with contextlib.suppress(OSError):
                sock.setsockopt(level, option, value)
    except BaseException:
        sock.close()
        raise
    return sock


class LinkAdapter(HTTPAdapter):
    """requests' adapter whose connections carry socket_options()."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["socket_options"] = [*HTTPConnection.default_socket_options, *socket_options()]
        super().init_poolmanager(*args, **kwargs)
