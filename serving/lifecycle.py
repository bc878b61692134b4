"""A server's stop switch, the same for worker and proxy: SIGTERM and SIGINT set ``should_exit``.

Usage:
    class ProxyServer(Lifecycle):
        async def serve(self) -> int:
            self.install_signal_handlers()
            await self.should_exit.wait()     # then shut down
"""

from __future__ import annotations

import asyncio
import signal


class Lifecycle:
    """What a serving process does with signals (uvicorn's ``handle_exit``, split by signal)."""

    def __init__(self) -> None:
        self.should_exit = asyncio.Event()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.handle_term)
        loop.add_signal_handler(signal.SIGINT, self.handle_int)

    def handle_term(self) -> None:
        self.should_exit.set()

    def handle_int(self) -> None:
        self.should_exit.set()
