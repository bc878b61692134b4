"""The client's and the proxy's connections give up on a silent peer in seconds (the multi-host test cuts a link)."""

from __future__ import annotations

import socket

from visionpool.client import links


def test_sockets_probe_a_silent_peer_and_give_up_after_a_few_seconds() -> None:
    sock = links.socket_factory((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 0)))
    with sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert not sock.getblocking()  # aiohttp connects it itself
        idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        interval = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
        probes = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
        assert idle + interval * probes == links.DEAD_LINK_SECONDS  # silence, then unanswered probes: dropped
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == links.DEAD_LINK_SECONDS * 1000


def test_the_requests_adapter_opens_such_sockets() -> None:
    adapter = links.LinkAdapter()
    options = adapter.poolmanager.connection_pool_kw["socket_options"]
    assert (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1) in options  # urllib3's own default is kept
    assert set(links.socket_options()) <= set(options)
