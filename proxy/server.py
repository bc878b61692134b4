"""Running a proxy: aiohttp on uvloop, following the registry until SIGTERM or SIGINT.

Usage:
    serve(ProxySettings(port=8080))   # returns the exit code
"""

from __future__ import annotations

import logging

from visionpool.discovery import create_registry
from visionpool.serving.frontdoor import run
from visionpool.serving.lifecycle import Lifecycle

from .app import create_app
from .settings import ProxySettings
from .state import DOOR

logger = logging.getLogger(__name__)


class ProxyServer(Lifecycle):
    """One proxy process: the app, its listening site, and the signals that stop it."""

    def __init__(self, settings: ProxySettings) -> None:
        super().__init__()
        self.settings = settings

    async def serve(self) -> int:
        """Start up, serve until told to stop, shut down."""
        app = create_app(self.settings, create_registry(self.settings, "proxy"))
        door = app[DOOR]
        host, port = self.settings.address
        s = self.settings
        await door.start(app, door.bind(host, port), self.listening_tls(s.tls_cert, s.tls_key, s.tls_client_ca))
        self.install_signal_handlers()
        logger.info(
            "proxy listening on %s://%s:%s (registry: %s)", self.settings.scheme, host, port, self.settings.registry
        )
        await self.should_exit.wait()
        logger.info("proxy shutting down: finishing requests in flight (up to %.0f s)", self.settings.drain_timeout)
        await door.stop()
        return 0


def serve(settings: ProxySettings) -> int:
    """Run a proxy until it is stopped; the process exit code."""
    return run(ProxyServer(settings).serve())
