"""Running a worker: a production WSGI server (cheroot) around the Flask app.

Usage:
    serve(WorkerSettings(models=["coco-ssd"], port=8000))   # returns the exit code

Startup validates every model config (a mistake stops the worker at once, naming
file and field), binds the port, then loads and warms the models in the
background while /healthz answers and /readyz says 503. SIGTERM or SIGINT stops
taking new requests, lets those in flight finish (up to drain_timeout) and exits 0.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from types import FrameType

from cheroot import wsgi

from visionpool.discovery import Instance, create_registry

from . import create_app
from .announce import Announcer
from .models import get_models
from .settings import WorkerSettings

logger = logging.getLogger(__name__)


class WorkerServer:
    """One worker process: app, HTTP server, and the signals that stop them."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.should_exit = threading.Event()
        self.app = create_app(settings)
        self.models = get_models(self.app)
        self.announcer: Announcer | None = None
        self.http = wsgi.Server(
            settings.address,
            self.app,
            numthreads=settings.threads,
            shutdown_timeout=math.ceil(settings.drain_timeout),
            request_queue_size=128,
            timeout=30,
        )

    def serve(self) -> int:
        """Start up, serve until told to stop or the models fail to load, shut down."""
        self.install_signal_handlers()
        self.http.prepare()  # binds now: a port in use fails here, before anything loads
        host, port = self.http.bind_addr[:2]
        instance = self.instance(port)
        self.app.config["WORKER_ID"] = instance.id
        self.announcer = self.make_announcer(instance)
        threading.Thread(target=self.http.serve, name="http", daemon=True).start()
        logger.info("worker listening on http://%s:%s (models: %s)", host, port, ", ".join(self.settings.models))
        if self.announcer:
            self.announcer.start()
        code = self.main_loop()
        self.shutdown()
        return code

    def instance(self, port: int) -> Instance:
        """This worker as the registry will know it."""
        host = self.settings.advertised_host()
        url_host = f"[{host}]" if ":" in host else host
        worker_id = self.settings.worker_id or f"{host}:{port}"
        return Instance(worker_id, f"http://{url_host}:{port}", {c.name: c.version for c in self.models.configs})

    def make_announcer(self, instance: Instance) -> Announcer | None:
        if self.settings.registry == "none":
            return None
        return Announcer(create_registry(self.settings, "worker"), instance, self.models.ready)

    def main_loop(self) -> int:
        announced = False
        while not self.should_exit.wait(0.1):
            if self.models.failure is not None:
                logger.error("stopping: the models could not be loaded (%s)", self.models.failure)
                return 1
            if not announced and self.models.ready.is_set():
                logger.info("worker ready: every model is loaded and warmed up")
                announced = True
        return 0

    def shutdown(self) -> None:
        started = time.monotonic()
        if self.announcer:
            self.announcer.stop()  # first: proxies stop sending before this worker stops taking
        logger.info("shutting down: finishing requests in flight (up to %.0f s)", self.settings.drain_timeout)
        self.http.stop()
        self.models.close()
        logger.info("worker stopped in %.2f s", time.monotonic() - started)

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.handle_term)
        signal.signal(signal.SIGINT, self.handle_int)

    def handle_term(self, signum: int, frame: FrameType | None) -> None:
        self.should_exit.set()

    def handle_int(self, signum: int, frame: FrameType | None) -> None:
        self.should_exit.set()


def serve(settings: WorkerSettings) -> int:
    """Run a worker until it is stopped; the process exit code."""
    return WorkerServer(settings).serve()
