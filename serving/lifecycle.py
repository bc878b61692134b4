"""A server's stop switch, the same for worker and proxy: SIGTERM and SIGINT set ``should_exit``.

Usage:
    class ProxyServer(Lifecycle):
        async def serve(self) -> int:
            self.install_signal_handlers()
            await self.should_exit.wait()     # then shut down
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from pathlib import Path

from .tls import reload, server_context

logger = logging.getLogger(__name__)


class Lifecycle:
    """What a serving process does with signals (uvicorn's ``handle_exit``, split by signal); SIGHUP loads a
    renewed TLS certificate into the listening context, dropping no connection."""

    def __init__(self) -> None:
        self.should_exit = asyncio.Event()
        self.tls: ssl.SSLContext | None = None
        self.tls_files: tuple[Path, Path] | None = None

    def listening_tls(
        self, cert: Path | None, key: Path | None, client_ca: Path | None = None
    ) -> ssl.SSLContext | None:
        """The context to listen with (None: plain HTTP), asking for client certificates with ``client_ca``; kept
        for SIGHUP."""
        if cert is not None and key is not None:
            self.tls, self.tls_files = server_context(cert, key, client_ca), (cert, key)
        return self.tls

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.handle_term)
        loop.add_signal_handler(signal.SIGINT, self.handle_int)
        loop.add_signal_handler(signal.SIGHUP, self.handle_hup)

    def handle_hup(self) -> None:
        if self.tls is None or self.tls_files is None:
            return
        try:
            reload(self.tls, *self.tls_files)
            logger.info("TLS certificate loaded again from %s", self.tls_files[0])
        except (OSError, ssl.SSLError) as error:
            logger.error("TLS certificate not reloaded (%s): the one in use stays", error)

    def handle_term(self) -> None:
        self.should_exit.set()

    def handle_int(self) -> None:
        self.should_exit.set()
