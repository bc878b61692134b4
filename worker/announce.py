"""Announcing a worker: register once ready, renew, and deregister first at shutdown.

Usage:
    announcer = Announcer(registry, instance, models.ready)
    announcer.start()     # a thread: waits for readiness, registers (retrying), renews
    announcer.stop()      # deregisters, before the server stops taking requests
"""

from __future__ import annotations

import logging
import threading

from visionpool.discovery import Instance, Registry, RegistryError

logger = logging.getLogger(__name__)
BACKOFF_MAX = 5.0


class Announcer:
    """Keeps one worker registered while it is ready."""

    def __init__(self, registry: Registry, instance: Instance, ready: threading.Event) -> None:
        self.registry, self.instance, self.ready = registry, instance, ready
        self.stopping = threading.Event()
        self.registered = False
        self.thread = threading.Thread(target=self._run, name="announcer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Stop renewing and deregister; a registry that cannot be reached is logged, not fatal."""
        self.stopping.set()
        self.thread.join(10)
        if not self.registered:
            return
        try:
            self.registry.deregister(self.instance)
            logger.info("deregistered %s", self.instance.id)
        except RegistryError as error:
            logger.warning("could not deregister %s: %s", self.instance.id, error)

    def _run(self) -> None:
        while not self.ready.wait(0.1):
            if self.stopping.is_set():
                return
        if not self._until_done(self.registry.register, "register"):
            return
        self.registered = True  # even if a stop came meanwhile: stop() must then deregister
        logger.info("registered %s at %s", self.instance.id, self.instance.url)
        interval = self.registry.renew_interval
        while interval > 0 and not self.stopping.wait(interval):
            self._until_done(self.registry.renew, "renew")

    def _until_done(self, call: object, what: str) -> bool:
        """Retry ``call(instance)`` with backoff until it works (True) or the worker stops (False)."""
        delay = 0.2
        while not self.stopping.is_set():
            try:
                call(self.instance)  # type: ignore[operator]
                return True
            except RegistryError as error:
                logger.warning("could not %s %s (retrying in %.1f s): %s", what, self.instance.id, delay, error)
            self.stopping.wait(delay)
            delay = min(delay * 2, BACKOFF_MAX)
        return False
