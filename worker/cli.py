"""``visionpool worker``: serve image models over HTTP.

Usage:
    visionpool worker [--model NAME ...] [--model-repository DIR] [--port PORT] [--registry ...]
    python -m visionpool.worker ...      (the same)
"""

from __future__ import annotations

from visionpool.serving.commands import service

from .settings import WorkerSettings


def run(settings: WorkerSettings) -> int:
    """Serve until stopped; with --supervise, keep a child worker alive instead."""
    if settings.model_file is not None:
        from .importer import serve_file

        settings = serve_file(settings)
    if settings.supervise:
        from .supervisor import Supervisor

        return Supervisor(settings).serve()
    from .server import serve

    return serve(settings)


COMMAND = service(
    "worker",
    "serve image models over HTTP",
    "Serve image models over HTTP: POST an image to /predict.",
    WorkerSettings,
    run,
)
