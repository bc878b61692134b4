"""``visionpool bench``: every measurement is made and reported, on its own pool or a running one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from graphs import channel_means_model
from helpers import debian_packages, write_sleepy_model

from visionpool.worker.engines import host_cores

pytestmark = pytest.mark.slow  # every test here starts processes


def bench(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "visionpool.client", "bench", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=cwd,
    )


def test_bench_starts_its_own_pool_and_reports_everything(tmp_path: Path) -> None:
    repository = write_sleepy_model(tmp_path / "models", seconds=0.01, max_batch_size=4)
    out = tmp_path / "bench.json"
    result = bench(
        "--model",
        "sleepy",
        "--model-repository",
        str(repository),
        "--concurrency",
        "1,2",
        "--duration",
        "0.6",
        "--warmup",
        "0.2",
        "--batch-sizes",
        "1,2",
        "--soak",
        "40",
        "--targets",
        "engine,inference,worker,proxy,p2p",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    points = {(r["target"], r["concurrency"]): r for r in report["rows"]}
    assert set(points) == {(t, c) for t in ("engine", "inference", "worker", "proxy", "p2p") for c in (1, 2)}
    alone = report["engines"]["python"]  # the engine alone, at each batch: what batching gains, whether decode limits
    assert alone["inference_limit_images_per_s"] == max(points["inference", c]["images_per_s"] for c in (1, 2))
    best = alone["inference_limit_images_per_s"] / points["inference", 1]["images_per_s"]  # the gain is reported,
    assert alone["batching_gain"] == pytest.approx(best, rel=0.02)  # not asserted: a speed is the benchmark's to print
    assert "python alone:" in result.stdout and "is the limit" in result.stdout
    assert result.stdout.startswith("CPU: ") and report["cpu"]["model"] in result.stdout  # figures say where they ran
    assert all(r["images_per_s"] > 0 and r["errors"] == 0 and r["p50_ms"] > 0 for r in points.values())
    assert report["engine_limit_images_per_s"] == max(
        points["engine", 1]["images_per_s"], points["engine", 2]["images_per_s"]
    )
    assert all(r["fraction_of_engine_limit"] > 0 for r in points.values())
    assert report["proxy_bytes"]["p2p"] == 0 < report["proxy_bytes"]["proxy"]  # p2p: no image crosses the proxy
    assert report["soak"]["requests"] == 40 and report["soak"]["rss_at_end_mb"] > 0
    assert report["proxy_overhead"]["pairs"] > 10 and report["proxy_overhead"]["proxy_p50_ms"] > 0
    assert "proxy adds" in result.stdout and "p2p" in result.stdout and "of limit" in result.stdout
    # the worker against the CPU ceiling measured before and after its series (the host's speed drifts)
    before, after = report["ceiling_cpu_ms_around_worker"]
    assert before == alone["cpu_ms_per_image"] and after > 0
    ceiling = points["worker", 1]["cpu_ceiling_images_per_s"]
    assert ceiling == pytest.approx(host_cores() * 2000 / (before + after), rel=0.01)
    assert "of the CPU ceiling measured before and after it" in result.stdout


def test_the_open_inference_protocol_targets_run_in_every_round(tmp_path: Path) -> None:
    repository = write_sleepy_model(tmp_path / "models", seconds=0.01, max_batch_size=4)
    out = tmp_path / "bench.json"
    result = bench("--model", "sleepy", "--model-repository", str(repository), "--targets", "v2-rest,v2-grpc",
                   "--concurrency", "1", "--duration", "0.5", "--warmup", "0.1", "--rounds", "2",
                   "--json", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = {row["target"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"v2-rest", "v2-grpc"}  # without the worker target, or a CPU ceiling, too
    assert all(row["rounds"] == 2 and row["errors"] == 0 and row["images_per_s"] > 0 for row in rows.values())


@pytest.mark.parametrize("load", ["python", "wrk"])
def test_bench_measures_a_running_pool(make_pool, tmp_path: Path, load: str) -> None:
    if load == "wrk":
        debian_packages(["wrk"], ["wrk"])
    pool = make_pool(1, model="sleepy", seconds=0.01)
    out = tmp_path / "bench.json"
    result = bench("--url", pool.url, "--model", "sleepy", "--targets", "worker,proxy,p2p", "--concurrency", "2",
                   "--duration", "0.5", "--warmup", "0.1", "--load-generator", load, "--json", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["worker"] == pool.workers[0].url and report["proxy"] == pool.url
    assert [r["target"] for r in report["rows"]] == ["worker", "proxy", "p2p"]
    assert all(r["errors"] == 0 and r["images_per_s"] > 0 and r["p50_ms"] > 0 for r in report["rows"])
    assert report["proxy_bytes"]["proxy"] > 100_000  # the proxy target's uploads went through the proxy
    missing = bench("--url", pool.url, "--model", "nope", "--targets", "proxy")
    assert missing.returncode != 0 and "no worker" in missing.stderr


def test_overhead_puts_the_worker_beside_gunicorn_and_flask(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    (tmp_path / "pool.secret").write_text("a pool secret of at least thirty-two bytes")
    shell = {**os.environ, "VISIONPOOL_POOL_SECRET_FILE": str(tmp_path / "pool.secret"),  # this shell's pool settings
             "VISIONPOOL_REGISTRY": "consul", "VISIONPOOL_CONSUL_URL": "http://127.0.0.1:9"}  # must not reach it
    result = bench("--targets", "overhead", "--concurrency", "2", "--duration", "1", "--warmup", "0.3",
                   "--rounds", "3", "--json", str(out), env=shell)  # fmt: skip
    assert result.returncode == 0, result.stderr
    [rows] = json.loads(out.read_text())["overhead"]
    assert [row["server"] for row in rows] == ["visionpool worker", "gunicorn + Flask"]
    for row in rows:  # both served every request, and their CPU per request is measured and printed
        assert row["images_per_s"] > 0 and row["errors"] == 0 and row["cpu_ms_per_request"] > 0
        assert str(row["cpu_ms_per_request"]) in result.stdout
        # measured three times in turn, each time in processes of its own, the row its median round
        assert len(row["rounds_cpu_ms_per_request"]) == 3 and len(set(row["rounds_pids"])) == 3
        assert row["cpu_ms_per_request"] == sorted(row["rounds_cpu_ms_per_request"])[1]
    ratios = sorted(g / w for w, g in zip(rows[0]["rounds_cpu_ms_per_request"], rows[1]["rounds_cpu_ms_per_request"],
                                          strict=True))  # fmt: skip
    assert f"spends {ratios[1]:.2f}x (median of 3 rounds in turn; {ratios[0]:.2f}-{ratios[2]:.2f}x)" in result.stdout
    assert "gunicorn" in rows[1]["versions"] and "flask" in rows[0]["versions"]
    assert "the worker's CPU per request" in result.stdout
    # what its pipeline's stages took of it, from the worker's own histograms (gunicorn keeps none)
    assert rows[0]["pipeline_ms_per_request"] > 0 and rows[1]["pipeline_ms_per_request"] is None
    assert str(rows[0]["pipeline_ms_per_request"]) in result.stdout and "around its pipeline's stages" in result.stdout


def test_overhead_on_one_cpu_with_wrk_keeps_both_servers_to_that_core(tmp_path: Path) -> None:
    debian_packages(["wrk"], ["wrk"])
    out = tmp_path / "bench.json"
    result = bench("--targets", "overhead", "--concurrency", "16", "--duration", "2", "--warmup", "0.5",
                   "--load-generator", "wrk", "--front-processes", "2", "--server-cpus", "0",
                   "--json", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    [rows] = json.loads(out.read_text())["overhead"]
    assert [row["server"] for row in rows] == ["visionpool worker (2 front processes)", "gunicorn + Flask"]
    for row in rows:  # wrk's answers counted, and each server (its front processes too) held to one core
        assert row["images_per_s"] > 0 and row["errors"] == 0 and row["p50_ms"] > 0
        assert 0 < row["cores"] <= 1.1, row
    wrong = bench("--targets", "overhead", "--server-cpus", "0-x")
    assert wrong.returncode != 0 and "is not a list of CPUs" in wrong.stderr


def test_the_peer_serves_the_same_onnx_model_beside_the_worker(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "means"
    (folder / "1").mkdir(parents=True)
    channel_means_model(folder / "1" / "model.onnx", (32, 32))
    (folder / "labels.txt").write_text("r\ng\nb\n")
    (folder / "config.toml").write_text('task = "classification"\nengine = "onnxruntime"\nfiles = ["model.onnx"]\n'
                                        'labels = "labels.txt"\n[input]\nwidth = 32\nheight = 32\n'
                                        '[output]\ndecoder = "softmax"\nscore_threshold = 0.0\n'
                                        'top_k = 3\n')  # fmt: skip
    out = tmp_path / "bench.json"
    # the repository as a relative path, as a user types it: the peer's gunicorn runs in a folder of its own
    result = bench("--model-repository", "models", "--model", "means", "--targets", "worker,peer", "--concurrency",
                   "2", "--duration", "0.8", "--warmup", "0.2", "--rounds", "2", "--json", str(out),
                   cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    rows = {row["target"]: row for row in report["rows"]}
    assert rows["peer"]["rounds"] == 2 and rows["worker"]["rounds"] == 2  # the peer in turn with the worker
    assert rows["peer"]["images_per_s"] > 0 and rows["peer"]["errors"] == 0 and rows["peer"]["worker_cpu_ms"] > 0
    assert "onnxruntime" in report["peer"]["versions"]
    assert "x the img/s of gunicorn + Flask + ONNX Runtime" in result.stdout
