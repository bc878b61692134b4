"""Servers the benchmark starts on loopback beside the pool (a no-op worker, gunicorn + Flask peers): started with
none of this shell's VISIONPOOL_* settings (a registry, a secret, TLS), waited for, measured from /proc, stopped,
and killed when they will not stop.

Usage:
    with running(gunicorn_command(folder, "peer:app", port), url, folder / "peer.log", path="/predict") as process:
        clock = family_clock(process.pid)          # its CPU seconds, its workers' included
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import requests

from visionpool.client import wire

from .loadgen import cpu_clock


def gunicorn_command(folder: Path, app: str, port: int) -> list[str]:
    """gunicorn serving ``app`` (module:variable, in ``folder``) as most teams first serve a model: one process,
    four threads."""
    return [sys.executable, "-m", "gunicorn", "--chdir", str(folder), "-w", "1", "-k", "gthread", "--threads", "4",
            "-b", f"127.0.0.1:{port}", app]  # fmt: skip


def parse_cpus(text: str | None) -> frozenset[int] | None:
    """taskset's CPU list ("0", "0,1", "0-3,6") as a set; None for none given. ValueError for a bad list."""
    if not text:
        return None
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            low, high = 0, -1
        if low < 0 or high < low:
            raise ValueError(f"{text!r} is not a list of CPUs such as 0, 0,1 or 0-3,6")
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


def on_cpus(cpus: frozenset[int] | None) -> Callable[[], None] | None:
    """What a started server runs first: keep it (and every thread and process it starts) on ``cpus``."""
    return None if cpus is None else functools.partial(os.sched_setaffinity, 0, cpus)


@contextlib.contextmanager
def running(
    command: list[str],
    url: str,
    log: Path,
    path: str = wire.READYZ,
    extra_env: dict[str, str] | None = None,
    cpus: frozenset[int] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A server started (on ``cpus`` only, when given), ready (GET ``path`` answers, or 405 for a peer that takes
    only POST there), then stopped."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("VISIONPOOL_")}
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=output, start_new_session=True,
                                   env={**environ, **(extra_env or {}), "PYTHONUNBUFFERED": "1"},
                                   preexec_fn=on_cpus(cpus))  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"visionpool bench: {command[2]} failed to start:\n{log.read_text(errors='replace')}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(url + path, timeout=1).status_code in (200, 405):
                    break
            time.sleep(0.1)
        else:
            raise SystemExit(f"visionpool bench: {url} not ready after 60 s")
        yield process
    finally:
        stop(process)


IDLE_SHARE = 0.05  # of one core: what a server started here spends at rest (health checks, heartbeats)
REST_MOST_S = 15.0  # the longest the bench waits for its servers to finish the last point's requests


def wait_until_idle(clock: Callable[[], float], most: float, step: float = 0.25) -> bool:
    """Wait until the processes ``clock`` reads rest (under IDLE_SHARE of a core for ``step`` seconds), at most
    ``most`` seconds; whether they did. Clients that stop leave up to their concurrency of requests queued, and a
    slow server works on them into what is measured next: gunicorn + Flask + ONNX Runtime on 1920x1080 photos took
    1.1 s on its own over the 64 left by 64 clients, longer beside the next point's warm-up, and the worker's
    4-client point after it read 1.64-1.76 cores busy instead of 1.90."""
    deadline = time.monotonic() + most
    try:
        last = clock()
        while time.monotonic() < deadline:
            time.sleep(step)
            now = clock()
            if now - last < IDLE_SHARE * step:
                return True
            last = now
    except OSError:  # a process gone: not busy (what is measured next says what became of it)
        return True
    return False


def settle(clocks: Sequence[Callable[[], float]]) -> None:
    """Before a measurement: wait until the servers these ``clocks`` read are at rest (at most REST_MOST_S), and
    say so when they are not; none to wait for, none waited for."""
    if clocks and not wait_until_idle(total(list(clocks)), REST_MOST_S):
        print(f"visionpool bench: the servers started here were still busy {REST_MOST_S:.0f} s after the last "
              "measurement's clients stopped; measuring anyway", file=sys.stderr)  # fmt: skip


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (gunicorn's workers too), SIGKILL when it has not gone in 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def family_clock(pid: int) -> Callable[[], float]:
    """CPU seconds of a process and its children (gunicorn's master and its worker)."""
    clocks = [cpu_clock(pid)]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        clocks += [cpu_clock(int(child)) for child in children]
    return total(clocks)


def total(clocks: list[Callable[[], float]]) -> Callable[[], float]:
    """One CPU clock adding up several."""
    return lambda: sum(clock() for clock in clocks)


def versions(*packages: str) -> str:
    """"name version" of each package installed, comma-separated."""
    found = []
    for package in packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{package} {importlib.metadata.version(package)}")
    return ", ".join(found)


def installed(package: str) -> bool:
    try:
        importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
