"""The Procfile under honcho, as the README's run command starts it: one dead worker must not stop the pool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests
from helpers import free_port, free_port_block, wait_until

pytestmark = pytest.mark.slow  # every test here starts processes

ROOT = Path(__file__).resolve().parent.parent
JPEG = {"Content-Type": "image/jpeg"}


def worker_processes(port: int) -> list[int]:
    """Pids of the worker processes (not their supervisors) listening on ``port``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"--no-supervise" in argv and f"PORT={port}".encode() in environ:  # honcho passes the port as $PORT
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_worker_is_restarted_and_the_pool_stays_up(jpegs: dict[str, bytes]) -> None:
    proxy_port, base = free_port(), free_port_block((0, 100, 101))
    proxy = f"http://127.0.0.1:{proxy_port}"
    env = {
        **os.environ,
        "VISIONPOOL_PROXY_PORT": str(proxy_port),
        "VISIONPOOL_REGISTRY_URL": proxy,
        "VISIONPOOL_REGISTRY_TOKEN": "procfile-test",
        "VISIONPOOL_REGISTRY_TTL": "2",
    }
    # honcho numbers ports per process type: the proxy (first) gets base, the workers base+100 and up
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    honcho = subprocess.Popen(
        [sys.executable, "-m", "honcho", "start", "-c", "worker=2", "-p", str(base)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def workers() -> set[str]:
            try:
                return {w["id"] for w in requests.get(proxy + "/workers", timeout=2).json()["workers"]}
            except requests.RequestException:
                return set()

        wait_until(lambda: len(workers()) == 2, timeout=90)
        victim_port = base + 100
        [victim] = worker_processes(victim_port)
        os.kill(victim, signal.SIGKILL)
        for _ in range(4):  # meanwhile the proxy retries on the other worker
            answer = requests.post(proxy + "/predict", data=jpegs["chelsea"], headers=JPEG, timeout=30)
            assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] == "cat"
        wait_until(lambda: worker_processes(victim_port) not in ([], [victim]), timeout=60)  # restarted
        wait_until(lambda: len(workers()) == 2, timeout=60)
        assert honcho.poll() is None  # honcho, the proxy and the other worker never stopped
    except AssertionError:
        log.seek(0)
        raise AssertionError("honcho's output:\n" + log.read().decode(errors="replace")[-6000:]) from None
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        honcho.wait(60)
        log.close()
