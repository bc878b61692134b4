"""Running a worker: the Flask app behind the front door, on uvloop.

Usage:
    serve(WorkerSettings(models=["coco-ssd"], port=8000))   # returns the exit code

Startup validates every model config (a mistake stops the worker at once, naming
file and field), binds the port, then loads and warms the models in the background
while /healthz answers and /readyz says 503. SIGTERM or SIGINT deregisters first,
stops taking new requests, answers uploads still arriving 503, lets requests whose
body is in finish (up to drain_timeout) and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

import grpc

from visionpool.discovery import Instance, create_registry
from visionpool.discovery.kv import load_secret
from visionpool.serving.frontdoor import FrontDoor, FrontDoorCollector, Limits, run
from visionpool.serving.lifecycle import Lifecycle
from visionpool.serving.tickets import Tickets

from . import create_app
from .announce import Announcer
from .fast import direct_predict
from .fronts import EngineHub, Fronts
from .metrics import METRICS
from .models import get_models
from .settings import WorkerSettings
from .v2_grpc import start_grpc
from .wsgi import ticket_guard, wsgi_app

logger = logging.getLogger(__name__)


class WorkerServer(Lifecycle):
    """One worker process: app, front door, registration, and the signals that stop them."""

    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__()
        self.settings = settings
        self.door = FrontDoor(Limits.of(settings))
        # a port in use fails here, before anything loads; with front processes, each listens on it with a socket
        # of its own (SO_REUSEPORT: the kernel spreads connections evenly, keep-alive ones included)
        self.sock = self.door.bind(*settings.address, shared=settings.front_processes > 0)
        self.app = create_app(settings)
        self.models = get_models(self.app)
        metrics = self.app.extensions[METRICS]
        self.hub = EngineHub(self.models, metrics)  # with front processes: their link, and their doors' counts
        doors = self.hub.door_state if settings.front_processes else self.door.state  # fronts: the doors clients see
        metrics.registry.register(FrontDoorCollector(doors, "worker"))
        self.announcer: Announcer | None = None
        self.grpc: grpc.Server | None = None
        self.grpc_port: int | None = None
        self.fronts: Fronts | None = None

    async def serve(self) -> int:
        """Start up, serve until told to stop or the models fail to load, shut down."""
        self.install_signal_handlers()
        host, port = self.sock.getsockname()[:2]
        guard = None
        if self.settings.pool_secret_file is not None:  # uploads need the proxy's ticket (p2p included), gRPC too
            settings = self.settings
            secret = load_secret(settings.pool_secret_file, settings.consul_url, settings.consul_token)  # file or KV
            tickets = Tickets(secret, self.worker_id(port))
            self.app.config["TICKETS"] = tickets  # before gRPC starts: no upload gets in unchecked
            self.hub.tickets = tickets  # front processes count each ticket's rate here, all in one
            guard = ticket_guard(tickets, self.models.default)
        if self.settings.grpc_port is not None:
            cert, key = self.settings.tls_cert, self.settings.tls_key
            self.grpc, self.grpc_port = start_grpc(
                self.app,
                self.settings.host,
                self.settings.grpc_port,
                self.settings.threads,
                self.settings.max_body_bytes,
                (cert, key) if cert is not None and key is not None else None,
                self.settings.tls_client_ca,
            )
            logger.info("worker serving the Open Inference Protocol over gRPC on %s:%s", host, self.grpc_port)
        instance = self.instance(port)
        self.app.config.update(WORKER_ID=instance.id, WORKER_URL=instance.url, WORKER_GRPC=instance.grpc)
        self.announcer = self.make_announcer(instance)
        tls = self.listening_tls(self.settings.tls_cert, self.settings.tls_key, self.settings.tls_client_ca)
        if self.settings.front_processes:  # they take the port; this process answers what they pass on
            self.fronts = Fronts(self.settings, self.sock, self.hub, self.models, instance.id)
            http = wsgi_app(self.app, self.door, self.settings.threads, None, direct_predict(self.app))
            await self.door.start(http, self.fronts.internal)  # the fronts checked tickets and TLS
            self.fronts.start()
        else:
            http = wsgi_app(self.app, self.door, self.settings.threads, guard, direct_predict(self.app))
            await self.door.start(http, self.sock, tls)
        logger.info(
            "worker listening on %s://%s:%s (models: %s%s)",
            self.settings.scheme, host, port, ", ".join(self.settings.models),
            f"; {self.settings.front_processes} front processes" if self.fronts else "",
        )  # fmt: skip
        if self.announcer:
            self.announcer.start()
        code = await self.main_loop()
        await self.shutdown()
        return code

    def handle_hup(self) -> None:
        super().handle_hup()
        if self.fronts is not None:  # each front holds its own TLS context
            self.fronts.signal(signal.SIGHUP)

    def worker_id(self, port: int) -> str:
        """This worker's name in the registry, in X-Worker-ID and in the tickets it accepts."""
        return self.settings.worker_id or f"{self.settings.advertised_host()}:{port}"

    def instance(self, port: int) -> Instance:
        """This worker as the registry will know it."""
        host = self.settings.advertised_host()
        url_host = f"[{host}]" if ":" in host else host
        worker_id = self.worker_id(port)
        models = {c.name: c.version for c in self.models.configs}
        grpc_address = f"{url_host}:{self.grpc_port}" if self.grpc_port else ""
        return Instance(worker_id, f"{self.settings.scheme}://{url_host}:{port}", models, grpc_address)

    def make_announcer(self, instance: Instance) -> Announcer | None:
        if self.settings.registry == "none":
            return None
        return Announcer(create_registry(self.settings, "worker"), instance, self.models.ready)

    async def main_loop(self) -> int:
        announced = False
        while not self.should_exit.is_set():
            if self.models.failure is not None:
                logger.error("stopping: the models could not be loaded (%s)", self.models.failure)
                return 1
            if self.fronts is not None and self.fronts.failure is not None:
                logger.error("stopping: %s", self.fronts.failure)
                return 1
            if not announced and self.models.ready.is_set():
                logger.info("worker ready: every model is loaded and warmed up")
                announced = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):  # not wait_for: on 3.11 it can swallow a cancellation
                    await self.should_exit.wait()
        return 0

    async def shutdown(self) -> None:
        started = time.monotonic()
        self.models.draining = True
        if self.announcer:
            await asyncio.to_thread(self.announcer.stop)  # first: proxies stop sending before this worker stops taking
        logger.info("shutting down: finishing requests in flight (up to %.0f s)", self.settings.drain_timeout)
        stopped = self.grpc.stop(grace=self.settings.drain_timeout) if self.grpc else None
        if self.fronts is not None:  # they finish what they hold, with this process still answering them
            await asyncio.to_thread(self.fronts.stop, self.settings.drain_timeout + 5)
        await self.door.stop()
        if stopped is not None:
            await asyncio.to_thread(stopped.wait)
        await asyncio.to_thread(self.models.close)
        logger.info("worker stopped in %.2f s", time.monotonic() - started)


def serve(settings: WorkerSettings) -> int:
    """Run a worker until it is stopped; the process exit code."""
    server = WorkerServer(settings)
    return run(server.serve())
