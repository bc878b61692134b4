"""Keeping a worker alive: restart it when it dies, stop it when told.

Usage:
    visionpool worker --supervise ...      (what the Procfile runs)

honcho stops every process of the pool when any one exits, so a crashed worker
must not exit: this parent process restarts it (with backoff) and exits only
after SIGTERM or SIGINT, once the worker has finished. The child is started from
the parent's settings, passed as ``VISIONPOOL_*`` variables, so it runs with exactly
what the parent was told however that was given (flags, environment, defaults).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

from visionpool.serving.options import to_environ

from .settings import WorkerSettings

logger = logging.getLogger(__name__)
BACKOFF_MAX = 30.0
HEALTHY_RUN = 60.0  # a child (a worker, a front process) that ran this long resets the backoff
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child process: a SIGTERM when its parent dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG), so that
    a killed supervisor leaves no worker behind holding its port, nor a killed worker its front processes."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    """Runs ``python -m visionpool.worker --no-supervise`` with these settings, again and again."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.command = [sys.executable, "-m", "visionpool.worker", "--no-supervise"]
        self.environ = {**os.environ, **to_environ(settings)}
        self.should_exit = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None

    def serve(self) -> int:
        signal.signal(signal.SIGTERM, self.handle_term)
        signal.signal(signal.SIGINT, self.handle_int)
        delay = 1.0
        while not self.should_exit.is_set():
            started = time.monotonic()
            self.child = subprocess.Popen(self.command, env=self.environ, preexec_fn=die_with_parent)
            if self.should_exit.is_set():  # a signal that came while it was starting
                self.child.send_signal(signal.SIGTERM)
            code = self.child.wait()
            if self.should_exit.is_set():
                return 0
            delay = 1.0 if time.monotonic() - started > HEALTHY_RUN else delay
            logger.error("worker exited with %s; restarting in %.0f s", code, delay)
            self.should_exit.wait(delay)
            delay = min(delay * 2, BACKOFF_MAX)
        return 0

    def handle_term(self, signum: int, frame: FrameType | None) -> None:
        self._pass_on(signal.SIGTERM)

    def handle_int(self, signum: int, frame: FrameType | None) -> None:
        self._pass_on(signal.SIGINT)

    def _pass_on(self, sig: signal.Signals) -> None:
        self.should_exit.set()
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(sig)
