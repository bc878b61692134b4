"""A pool on loopback (a proxy with its embedded registry, workers on a fast sleeping model), and a real browser.

The browser is Debian's headless Chromium, driven by selenium through chromium-driver; the tests
install both with apt-get when they are missing (the test command installs what the tests need).
A browser test that fails leaves a screenshot of the page in test-artifacts/.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from helpers import ServerProcess, debian_packages, wait_until, write_sleepy_model

ARTIFACTS = Path(os.environ.get("VISIONPOOL_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))

TOKEN = "test-registry-token"
TTL = "1.5"  # seconds: workers renew every 0.5 s, so a restarted proxy relearns them fast


@dataclass
class Pool:
    """A running proxy and the workers registered with it."""

    proxy: ServerProcess
    start_worker: Callable[..., ServerProcess]
    repository: Path
    workers: list[ServerProcess] = field(default_factory=list)

    def add_worker(self, *args: str, model: str = "sleepy", repository: Path | None = None) -> ServerProcess:
        worker = self.start_worker(
            "--model",
            model,
            "--model-repository",
            str(repository or self.repository),
            "--registry",
            "local",
            "--registry-url",
            self.proxy.url,
            "--registry-token",
            TOKEN,
            "--registry-ttl",
            TTL,
            *args,
        )
        self.workers.append(worker)
        return worker

    def registered(self) -> set[str]:
        return {w["id"] for w in requests.get(self.proxy.url + "/workers", timeout=5).json()["workers"]}

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        wait_until(lambda: len(self.registered()) == count, timeout)


@pytest.fixture
def make_pool(start_proxy, start_worker, tmp_path: Path) -> Callable[..., Pool]:
    """Start a proxy and ``workers`` workers; returns once every worker is in the rotation."""

    def make(workers: int = 3, *proxy_args: str, seconds: float = 0.02) -> Pool:
        repository = write_sleepy_model(tmp_path / "models", seconds=seconds, max_batch_size=8, max_queue_size=256)
        proxy = start_proxy("--registry-token", TOKEN, "--registry-ttl", TTL, *proxy_args)
        pool = Pool(proxy, start_worker, repository)
        for _ in range(workers):
            pool.add_worker()
        pool.wait_for(workers)
        return pool

    return make


def chromium() -> tuple[str, str]:
    """The paths of chromium and chromedriver, installed first when missing (apt-get install chromium
    chromium-driver, through tests/helpers.py's debian_packages, as the bench tests install wrk)."""
    binary, driver = debian_packages(["chromium", "chromium-driver"], ["chromium", "chromedriver"])
    return binary, driver


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One headless Chromium for the session's browser tests."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary  # the system's browser and driver: selenium downloads nothing
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1600"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    yield chrome
    chrome.quit()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """When a browser test fails, save what the page looked like (and its console) next to the report."""
    report = yield
    chrome = getattr(item, "funcargs", {}).get("browser")
    if chrome is not None and report.when == "call" and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        screenshot = ARTIFACTS / f"{item.name}.png"
        with contextlib.suppress(Exception):
            chrome.save_screenshot(str(screenshot))
            console = "\n".join(f"{e['level']} {e['message']}" for e in chrome.get_log("browser"))
            report.sections.append(("browser", f"screenshot: {screenshot}\nconsole:\n{console}"))
    return report
