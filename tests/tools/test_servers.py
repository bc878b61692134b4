"""The servers the bench starts: it measures a point only once they have finished the last point's requests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from visionpool.tools import servers
from visionpool.tools.servers import family_clock, wait_until_idle

pytestmark = pytest.mark.slow  # every test here starts a process

BUSY_THEN_IDLE = """
import pathlib, sys, time
stop = time.monotonic() + float(sys.argv[2])
while time.monotonic() < stop:  # a server answering what the last clients left queued
    pass
pathlib.Path(sys.argv[1]).write_text("done")
time.sleep(60)
"""


@pytest.fixture
def busy(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A process that spends a core for 0.8 s, notes it has finished, then rests."""
    done = tmp_path / "done"
    process = subprocess.Popen([sys.executable, "-c", BUSY_THEN_IDLE, str(done), "0.8"])
    yield process, done
    process.kill()
    process.wait()


def test_waits_until_the_servers_have_finished_their_work(busy: tuple[subprocess.Popen[bytes], Path]) -> None:
    process, done = busy
    assert wait_until_idle(family_clock(process.pid), most=30)
    assert done.read_text() == "done"  # it returned only once the work was over, not on the first quiet moment


def test_gives_up_on_a_server_that_stays_busy_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    process = subprocess.Popen([sys.executable, "-c", BUSY_THEN_IDLE, str(tmp_path / "done"), "30"])
    try:
        assert not wait_until_idle(family_clock(process.pid), most=1.0)  # a pool serving others: bounded
        monkeypatch.setattr(servers, "REST_MOST_S", 0.6)
        servers.settle([family_clock(process.pid)])  # the bench measures anyway, and says why its figures may be off
        assert "still busy" in capsys.readouterr().err
        assert not (tmp_path / "done").exists()
    finally:
        process.kill()
        process.wait()


def test_a_server_that_has_gone_is_not_waited_for() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    clock = family_clock(process.pid)
    process.wait()
    assert wait_until_idle(clock, most=30)
