#!/usr/bin/env python3
"""Usage: sudo python3 ops/verify_container.py [--rebuild-base] [--keep]

Builds the CPU image with podman and checks it as a user would: a proxy and a worker container on a
network of their own, a real photo predicted through the proxy (the cat and its box), the image's
HEALTHCHECK, the non-root user, then SIGTERM to the worker under load: it deregisters at once,
finishes what it had taken, and exits 0. Then ops/compose.yaml with podman-compose and three
workers (the Consul agent double standing in for the Consul image, which needs a registry). Not part
of CI (it builds an image: minutes); the README says how long it takes.

Where no image registry can be reached, the base image is made from Debian packages (debootstrap,
then podman import) and kept as localhost/visionpool-base:bookworm for later runs. It installs
podman, runc and debootstrap with apt-get when they are missing, and sets podman's
default_ulimits to none (crun, and ulimits, fail on some cgroup set-ups). Needs root, the project
installed with its test extra (requests, scikit-image), and PyPI for the image's build. Only
127.0.0.1 and the containers it starts are ever asked; every wait is bounded.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BASE = "localhost/visionpool-base:bookworm"
IMAGE = "localhost/visionpool:cpu"
CONF = Path("/etc/containers/containers.conf")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
PROXY_PORT = 18080  # on 127.0.0.1: the one address this script sends to
TOKEN = "verify-container"
JPEG = {"Content-Type": "image/jpeg"}
CAT_BOX = (9, 0, 395, 298)  # x, y, width, height of the chelsea cat (the demo's answer)
started = time.monotonic()


def step(message: str) -> None:
    print(f"[{time.monotonic() - started:6.1f} s] {message}", flush=True)


def run(*command: str, check: bool = True, timeout: float = 1800, **options: object) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **options)  # type: ignore[call-overload]
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done


def ensure_tools() -> None:
    missing = [tool for tool in ("podman", "runc", "debootstrap") if not shutil.which(tool)]
    if missing:
        step(f"installing {', '.join(missing)} with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run("apt-get", "update", "-q", env=env)
        run("apt-get", "install", "-y", "-q", "podman", "runc", "debootstrap", env=env)
    text = CONF.read_text() if CONF.exists() else ""
    if "default_ulimits" not in text:
        step(f"{CONF}: default_ulimits = [], runtime = runc")
        CONF.parent.mkdir(parents=True, exist_ok=True)
        CONF.write_text(text + '\n[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n')


def ensure_base(rebuild: bool) -> None:
    if not rebuild and run("podman", "image", "exists", BASE, check=False).returncode == 0:
        step(f"base image {BASE} is there")
        return
    step("making the base image from Debian packages (debootstrap bookworm, minbase + python3)")
    with tempfile.TemporaryDirectory() as rootfs:
        run("debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm",
            rootfs, "http://deb.debian.org/debian")  # fmt: skip
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in Path(rootfs, cache).glob("*"):
                if item.is_file():
                    item.unlink()
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        run("podman", "import", "-", BASE, stdin=tar.stdout)
        tar.wait(60)
    step(f"base image {BASE} imported")


def build() -> None:
    step(f"building {IMAGE} (ops/container/Containerfile on {BASE})")
    ca = ["--volume", f"{HOST_CA}:/run/host-ca.crt:ro", "--build-arg", "PIP_CERT=/run/host-ca.crt"]
    run("podman", "build", "--format", "docker", "-f", "ops/container/Containerfile", "--build-arg",
        f"BASE={BASE}", *(ca if HOST_CA.exists() else []), "-t", IMAGE, ".", cwd=ROOT)  # fmt: skip
    size = run("podman", "image", "inspect", IMAGE, "--format", "{{.Size}}").stdout.strip()
    step(f"built {IMAGE}: {int(size) / 1e6:.0f} MB")


def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out after {seconds:g} s waiting for {what}")


def photo() -> bytes:
    import skimage.data
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def iou(box: dict[str, int], expected: tuple[int, int, int, int]) -> float:
    x, y, w, h = expected
    ix = max(0, min(box["x"] + box["width"], x + w) - max(box["x"], x))
    iy = max(0, min(box["y"] + box["height"], y + h) - max(box["y"], y))
    return ix * iy / (box["width"] * box["height"] + w * h - ix * iy)


def check_pool(proxy: str, network: str) -> None:
    until(lambda: len(requests.get(proxy + "/workers", timeout=2).json()["workers"]) == 1, 180, "the worker")
    [worker] = requests.get(proxy + "/workers", timeout=2).json()["workers"]
    step(f"the proxy lists the worker at {worker['url']} (its container's address)")
    answer = requests.post(proxy + "/predict", data=photo(), headers={"Content-Type": "image/jpeg"}, timeout=60)
    best = answer.json()["predictions"][0]
    assert answer.status_code == 200 and best["label"] == "cat", answer.text
    assert iou(best["box"], CAT_BOX) > 0.9, best
    step(f"chelsea.jpg through the proxy: {best['label']} {best['score']:.2f} at {best['box']}")
    for name in ("vp-worker", "vp-proxy"):
        until(lambda name=name: run("podman", "healthcheck", "run", name, check=False).returncode == 0, 60,
              f"{name}'s HEALTHCHECK")  # fmt: skip
    assert run("podman", "exec", "vp-worker", "id", "-u").stdout.strip() == "10001"
    step("HEALTHCHECK passes in both containers; the worker runs as uid 10001")


def check_drain(proxy: str) -> None:
    """SIGTERM under load: every request the worker took is answered 200; afterwards the proxy has no worker
    (503 no_worker), never a broken or timed-out request."""
    image, statuses, stop = photo(), [], threading.Event()

    def client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    sent = session.post(proxy + "/predict", data=image, headers=JPEG, timeout=60)
                    statuses.append((sent.status_code, sent.json().get("error", {}).get("code")))
                except (requests.RequestException, ValueError) as error:  # broken, or not our JSON: counted
                    statuses.append((0, f"{type(error).__name__}: {error}"))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    until(lambda: len(statuses) >= 20, 60, "load on the worker")
    terminated = time.monotonic()
    run("podman", "kill", "--signal", "TERM", "vp-worker")
    until(lambda: requests.get(proxy + "/workers", timeout=2).json()["workers"] == [], 10, "the worker deregistering")
    gone = time.monotonic() - terminated
    code = run("podman", "wait", "vp-worker", timeout=60).stdout.strip()
    exited = time.monotonic() - terminated
    stop.set()
    for thread in threads:
        thread.join(60)
    logs = run("podman", "logs", "vp-worker").stderr + run("podman", "logs", "vp-worker").stdout
    unexpected = [s for s in statuses if s != (200, None) and s != (503, "no_worker")]
    assert code == "0", f"the worker exited {code}\n{logs[-3000:]}"
    assert not unexpected, f"requests failed otherwise than 'no worker left': {unexpected[:5]}"
    assert "finishing requests in flight" in logs, logs[-3000:]
    served = sum(1 for s in statuses if s[0] == 200)
    step(f"SIGTERM: deregistered within {gone:.1f} s, exited 0 after {exited:.1f} s; {served} requests answered 200,"
         f" {len(statuses) - served} answered 503 no_worker after it left, none broken")  # fmt: skip


COMPOSE_STAND_IN = """
services:
  consul:  # no registry here for hashicorp/consul: the project's Consul agent double stands in for it
    image: {image}
    entrypoint: ["python", "/double/consul_double.py", "0.0.0.0", "8500"]
    command: []
    volumes: ["{double}:/double:ro"]
    healthcheck:
      test: ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8500/v1/agent/services')"]
  proxy:
    image: {image}
  worker:
    image: {image}
"""


def check_compose() -> None:
    """ops/compose.yaml with podman-compose: Consul (its double), a proxy, three workers; predictions spread."""
    if not shutil.which("podman-compose"):
        step("installing podman-compose with pip")
        run(sys.executable, "-m", "pip", "install", "-q", "podman-compose")
    port, double = PROXY_PORT + 1, ROOT / "tests" / "discovery"
    with tempfile.TemporaryDirectory() as folder:
        stand_in = Path(folder, "stand-in.yaml")
        stand_in.write_text(COMPOSE_STAND_IN.format(image=IMAGE, double=double))
        compose = ["podman-compose", "-p", "vp-verify", "-f", str(ROOT / "ops" / "compose.yaml"), "-f", str(stand_in)]
        try:
            env = {**os.environ, "WORKERS": "3", "PROXY_PORT": f"127.0.0.1:{port}"}
            run(*compose, "up", "-d", "--no-build", "--scale", "worker=3", env=env)
            proxy = f"http://127.0.0.1:{port}"
            until(lambda: len(requests.get(proxy + "/workers", timeout=2).json()["workers"]) == 3, 180, "3 workers")
            answered = [
                requests.post(proxy + "/predict", data=photo(), headers={"Content-Type": "image/jpeg"}, timeout=60)
                for _ in range(12)
            ]
            assert all(a.status_code == 200 and a.json()["predictions"][0]["label"] == "cat" for a in answered)
            spread = sorted(Counter(a.headers["X-Worker-ID"] for a in answered).values())
            assert spread == [4, 4, 4], spread
            step("compose.yaml (podman-compose, --scale worker=3): 3 workers registered through Consul's double; "
                 "12 photos, 4 to each, every one a cat")  # fmt: skip
        finally:
            run(*compose, "down", "-t", "0", check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--rebuild-base", action="store_true", help="make the Debian base image again")
    parser.add_argument("--keep", action="store_true", help="leave the containers running at the end")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: it installs packages and runs podman as root")
    ensure_tools()
    ensure_base(args.rebuild_base)
    build()
    network, proxy = f"vp-verify-{os.getpid()}", f"http://127.0.0.1:{PROXY_PORT}"
    run("podman", "network", "create", network)
    try:
        token = ["-e", f"VISIONPOOL_REGISTRY_TOKEN={TOKEN}", "--network", network]
        run("podman", "run", "-d", "--name", "vp-proxy", *token, "-p", f"127.0.0.1:{PROXY_PORT}:8080", IMAGE, "proxy")
        run("podman", "run", "-d", "--name", "vp-worker", *token, IMAGE,
            "worker", "--registry", "local", "--registry-url", "http://vp-proxy:8080")  # fmt: skip
        step("started a proxy and a worker container")
        check_pool(proxy, network)
        check_drain(proxy)
    finally:
        if not args.keep:
            run("podman", "rm", "-f", "-t", "0", "vp-worker", "vp-proxy", check=False)
            run("podman", "network", "rm", "-f", network, check=False)
    check_compose()
    step("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
