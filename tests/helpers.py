"""Helpers the tests share: free ports, image bytes, box overlap, worker processes."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import requests
from PIL import Image


def cpu_bf16() -> str | None:
    """The CPU flag that gives OpenVINO bf16 here (amx_bf16 or avx512_bf16), or None (as visionpool bench reads
    the CPU's flags)."""
    from visionpool.tools.bench import cpu

    flags = cpu()["flags"]
    return next((flag for flag in ("amx_bf16", "avx512_bf16") if flag in flags), None)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def free_port() -> int:
    """A port nobody listens on, found by binding port 0."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_block(offsets: tuple[int, ...], low: int = 20000, high: int = 32000) -> int:
    """A base port such that base + each offset is free, below the kernel's ephemeral range (32768 and up).

    For programs that number ports from a base, as honcho does (the second process type gets base + 100):
    a base found by binding port 0 lies in the ephemeral range, where a client connection may hold base + 100.
    """
    import random

    for base in random.Random().sample(range(low, high - max(offsets)), 200):
        try:
            for offset in offsets:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise AssertionError("no free block of ports")


def encode(pixels: np.ndarray, fmt: str = "JPEG", **params: object) -> bytes:
    """Pixels as an image file's bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **params)
    return buffer.getvalue()


def scan_bomb(scans: int, size: int = 96) -> bytes:
    """A progressive JPEG followed by ``scans`` empty copies of its last scan's header: each costs a decoder a pass
    over every pixel (a scan bomb; small here, where what is tested is that it is refused)."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buffer, "JPEG", progressive=True)
    data = buffer.getvalue()
    start = data.rindex(b"\xff\xda")
    header = data[start : start + 2 + int.from_bytes(data[start + 2 : start + 4], "big")]
    return data[:-2] + header * scans + data[-2:]


def iou(a: dict[str, int], b: dict[str, int]) -> float:
    """Intersection over union of two {x, y, width, height} boxes."""
    x1, y1 = max(a["x"], b["x"]), max(a["y"], b["y"])
    x2 = min(a["x"] + a["width"], b["x"] + b["width"])
    y2 = min(a["y"] + a["height"], b["y"] + b["height"])
    inter = max(x2 - x1, 0) * max(y2 - y1, 0)
    return inter / (a["width"] * a["height"] + b["width"] * b["height"] - inter)


class ServerProcess:
    """A ``visionpool worker`` or ``visionpool proxy`` running in a subprocess."""

    def __init__(self, command: str, args: list[str], env: dict[str, str], port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = "/readyz" if command == "worker" else "/healthz"
        # a file, not a pipe: a chatty process never blocks on it; the fixture closes it
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"visionpool.{command}", *args],
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll until ready (200); fail with the process's output if it exits or the deadline passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"process exited {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(self.url + self.ready_path, timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"not ready after {timeout} s:\n{self.stop()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> str:
        """Signal the process, wait for it to exit, and return everything it printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.output()

    def output(self) -> str:
        """Everything the process printed so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


SLEEP_MODEL = '''
import time
import numpy as np

class Model:
    """Sleeps, then answers uniform logits; records each batch it ran (and appends it to a marker file)."""

    def __init__(self, files, options):
        self.seconds = options.get("seconds", 0.2)
        self.marker = options.get("marker")
        self.batches = []

    def run(self, batch):
        self.batches.append(len(batch))
        if self.marker:
            with open(self.marker, "a") as marker:
                marker.write(f"{len(batch)}\\n")
        time.sleep(self.seconds)
        return {"logits": np.zeros((len(batch), 3), np.float32)}
'''


def write_sleepy_model(
    root: Path, seconds: float, max_batch_size: int = 1, max_queue_size: int = 8, marker: Path | None = None
) -> Path:
    """A model 'sleepy' in repository ``root``: a Python-engine model whose every batch sleeps ``seconds``."""
    folder = root / "sleepy"
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "1" / "model.py").write_text(SLEEP_MODEL)
    (folder / "labels.txt").write_text("a\nb\nc\n")
    options = f"seconds = {seconds}\n" + (f'marker = "{marker}"\n' if marker else "")
    (folder / "config.toml").write_text(
        'task = "classification"\nengine = "python"\nfiles = ["model.py"]\nlabels = "labels.txt"\n'
        "[input]\nwidth = 8\nheight = 8\n"
        '[output]\ndecoder = "softmax"\nscore_threshold = 0.0\ntop_k = 1\n'
        f"[batching]\nmax_batch_size = {max_batch_size}\nmax_queue_delay_ms = 0\nmax_queue_size = {max_queue_size}\n"
        f"[engine_options]\n{options}"
    )
    return root


def write_slow_loading_model(root: Path, seconds: float, marker: Path | None = None) -> None:
    """A Python-engine classifier 'slow' whose loading takes ``seconds`` (and first creates ``marker``)."""
    (root / "slow" / "1").mkdir(parents=True)
    mark = f"        open({str(marker)!r}, 'w').close()\n" if marker else ""
    (root / "slow" / "1" / "model.py").write_text(
        "import time\nimport numpy as np\n"
        "class Model:\n"
        f"    def __init__(self, files, options):\n{mark}        time.sleep({seconds})\n"
        "    def run(self, batch):\n        return {'logits': np.zeros((len(batch), 2), np.float32)}\n"
    )
    (root / "slow" / "config.toml").write_text(
        'task = "classification"\nengine = "python"\nfiles = ["model.py"]\n[input]\nwidth = 8\nheight = 8\n'
        '[output]\ndecoder = "softmax"\n'
    )


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET url/metrics, parsed: (sample name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(url + "/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: dict, name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    return float(samples.get((name, tuple(sorted(labels.items()))), 0.0))


def launcher(started: list[ServerProcess], command: str) -> Callable[..., ServerProcess]:
    """A function starting ``visionpool <command>`` on a free port (or ``port``, or $PORT from ``env``)."""

    def start(
        *args: str, env: dict[str, str] | None = None, ready: bool = True, port: int | None = None
    ) -> ServerProcess:  # noqa: E501
        env = env or {}
        port = port or (int(env["PORT"]) if "PORT" in env else free_port())
        flags = [] if "PORT" in env else ["--port", str(port)]
        server = ServerProcess(command, [*flags, *args], env, port)
        started.append(server)
        if ready:
            server.wait_ready()
        return server

    return start


def debian_packages(packages: list[str], binaries: list[str]) -> list[str]:
    """The paths of ``binaries``, installed from Debian's ``packages`` first when one is missing (the test command
    installs what the tests need); the test fails, saying why, where that cannot be done."""
    import pytest

    if not all(shutil.which(binary) for binary in binaries):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.fail(f"these tests need Debian's {' and '.join(packages)}: apt-get install {' '.join(packages)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", *packages]
        if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:  # stale lists?
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=300, check=True)
            done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                pytest.fail(f"apt-get could not install {' and '.join(packages)}: {done.stderr[-2000:]}")
    found = [shutil.which(binary) for binary in binaries]
    if not all(found):
        pytest.fail(f"apt-get installed {' and '.join(packages)}, but {', '.join(binaries)} are not all on PATH")
    return [path for path in found if path]
