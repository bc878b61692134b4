"""``visionpool chaos``: it attacks only this machine, and reports what it did."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from visionpool.tools.chaos import _mutate, local_only


def test_only_this_machines_addresses_are_attacked() -> None:
    local_only("http://127.0.0.1:8080")
    local_only("http://localhost:8080")
    for url in ("http://192.0.2.10:8080", "http://10.255.255.1:80", "http://198.51.100.7"):
        with pytest.raises(ValueError, match="not on this machine"):
            local_only(url)


def test_broken_images_are_broken_in_every_way() -> None:
    rng = random.Random(1)
    original = (bytes(range(256)) * 40, "image/png")
    variants = [_mutate(rng, original) for _ in range(200)]
    assert any(len(data) < len(original[0]) for data, _ in variants)  # cut
    assert any(len(data) > len(original[0]) for data, _ in variants)  # bytes inserted
    assert any(len(data) == len(original[0]) and data != original[0] for data, _ in variants)  # bits flipped
    assert any(content_type != "image/png" for _, content_type in variants)  # the wrong type


@pytest.mark.slow
def test_a_short_chaos_run_reports_every_scenario(make_pool, tmp_path: Path) -> None:
    pool = make_pool(1, model="sleepy", seconds=0.01)
    out = tmp_path / "chaos.json"
    command = [sys.executable, "-m", "visionpool.client", "chaos", "--url", pool.url, "--seconds", "1"]
    command += ["--scenarios", "slow-uploads,slow-headers,idle,oversized,fuzz,bombs,flood"]
    command += ["--slow", "20", "--idle", "50"]
    command += ["--oversized", "2", "--fuzz", "60", "--bombs", "14", "--flood", "200", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    reports = {r["scenario"]: r for r in json.loads(out.read_text())}
    assert set(reports) == {"slow-uploads", "slow-headers", "idle", "oversized", "fuzz", "bombs", "flood"}
    bombs = reports["bombs"]["answers"]  # each of the seven kinds twice, each refused
    assert sum(bombs.values()) == 14 and all(key.endswith(" 400") for key in bombs) and len(bombs) == 7
    assert reports["oversized"]["answers"] == {"413": 2, "next valid request 200": 2}
    assert sum(reports["fuzz"]["answers"].values()) == 60 and "500" not in reports["fuzz"]["answers"]
    assert reports["slow-uploads"]["during"]["errors"] == 0 and reports["slow-uploads"]["during"]["images_per_s"] > 0
    assert "7 of 7 scenarios ok" in result.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "visionpool.client", "chaos", "--url", "http://192.0.2.10:8080"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "not on this machine" in refused.stderr


@pytest.mark.slow
def test_the_kill_scenario_loses_no_request_to_a_killed_supervised_worker(make_pool, tmp_path: Path) -> None:
    pool = make_pool(2, "sleepy", "--supervise", seconds=0.01, max_batch_size=8, max_queue_size=64)
    out = tmp_path / "chaos.json"
    command = [sys.executable, "-m", "visionpool.client", "chaos", "--url", pool.url, "--seconds", "2"]
    command += ["--scenarios", "kill", "--clients", "4", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    [kill] = json.loads(out.read_text())
    assert kill["answers"]["SIGKILL: requests failed"] == 0 and kill["answers"]["SIGTERM: requests failed"] == 0
    assert kill["answers"]["SIGKILL: requests ok"] > 0 and kill["answers"]["SIGTERM: requests ok"] > 0
    assert "1 of 1 scenarios ok" in result.stdout


@pytest.mark.slow
def test_the_auth_scenario_refuses_everyone_without_a_key_or_ticket(start_proxy, start_worker, tmp_path: Path) -> None:
    from pools import secured_pool

    pool = secured_pool(start_proxy, start_worker, tmp_path, rate=10_000)
    proxy, key = pool.proxy, pool.key
    out = tmp_path / "chaos.json"
    command = [sys.executable, "-m", "visionpool.client", "chaos", "--url", proxy.url, "--seconds", "2",
               "--scenarios", "auth", "--clients", "2", "--api-key", key, "--json", str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    [auth_report] = json.loads(out.read_text())
    assert set(auth_report["answers"]) <= {"401", "403"} and auth_report["notes"]["refused"] > 100
    assert auth_report["notes"]["20 MB uploads without a key: slowest 401 (ms)"] < 1000
    assert auth_report["during"]["errors"] == 0
