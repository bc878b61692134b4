"""GET /metrics and the request log of a worker: what an operator watches."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import requests
from helpers import sample, scrape

from visionpool.worker.metrics import Tracked, tracking

pytestmark = pytest.mark.slow  # every test here starts processes

MODEL = "ssd-mobilenet-v2"


def test_metrics_count_time_and_describe_every_request(start_worker, model_repository: Path, jpegs) -> None:
    worker = start_worker("--model", MODEL, "--model-repository", str(model_repository))
    before = scrape(worker.url)
    for name in ("chelsea", "coffee", "camera"):
        requests.post(worker.url + "/predict", data=jpegs[name], headers={"Content-Type": "image/jpeg"}, timeout=30)
    requests.post(worker.url + "/predict", data=b"junk", headers={"Content-Type": "image/jpeg"}, timeout=30)
    requests.post(worker.url + "/models/made-up/predict", data=b"x", headers={"Content-Type": "image/jpeg"}, timeout=30)
    after = scrape(worker.url)

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert grew("visionpool_worker_requests_total", model=MODEL, status="200", outcome="ok") == 3
    assert grew("visionpool_worker_requests_total", model=MODEL, status="400", outcome="invalid_image") == 1
    assert grew("visionpool_worker_requests_total", model="unknown", status="404", outcome="model_not_found") == 1
    assert not any("made-up" in str(labels) for _, labels in after)  # no label per invented model name
    assert grew("visionpool_worker_request_duration_seconds_count", model=MODEL) == 4
    for stage in ("decode", "preprocess", "queue", "inference", "postprocess"):
        assert grew("visionpool_worker_stage_duration_seconds_count", model=MODEL, stage=stage) == 3, stage
    assert grew("visionpool_worker_stage_duration_seconds_sum", model=MODEL, stage="inference") > 0.01
    assert grew("visionpool_worker_batch_size_count", model=MODEL) == 3
    assert sample(after, "visionpool_worker_queue_depth", model=MODEL) == 0
    assert sample(after, "visionpool_worker_requests_in_flight") == 0
    assert sample(after, "visionpool_worker_model_load_seconds", model=MODEL) > 0
    [(_, where)] = [key for key in after if key[0] == "visionpool_worker_model_info"]  # where the model runs
    where = dict(where)
    assert where.pop("precision") in ("bf16", "f32")  # bf16 where the CPU has it
    assert where == {"model": MODEL, "version": "1", "engine": "openvino", "device": "cpu"}
    assert sample(after, "visionpool_worker_model_warmup_seconds", model=MODEL) > 0
    assert sample(after, "process_resident_memory_bytes") > 50e6


def test_one_json_log_line_per_request(start_worker, model_repository: Path, jpegs) -> None:
    worker = start_worker("--model", MODEL, "--model-repository", str(model_repository), "--log-format", "json")
    requests.post(
        worker.url + "/predict",
        data=jpegs["chelsea"],
        headers={"Content-Type": "image/jpeg", "X-Request-ID": "trace-me-42"},
        timeout=30,
    )
    lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("request_id") == "trace-me-42"]
    assert len(mine) == 1
    record = mine[0]
    assert record["model"] == MODEL and record["status"] == 200 and record["outcome"] == "ok"
    assert record["batch_size"] == 1 and record["levelname"] == "INFO"
    assert all(record[f"{stage}_ms"] >= 0 for stage in ("decode", "preprocess", "queue", "inference", "postprocess"))
    assert record["total_ms"] >= record["inference_ms"] > 0


def test_a_request_cancelled_midway_is_not_counted_as_answered() -> None:
    """A prediction awaited in the event loop may be cancelled (the worker stopping past its drain timeout)."""
    recorded: list[Tracked] = []
    with pytest.raises(asyncio.CancelledError), tracking("m", "id", lambda request, _: recorded.append(request)):
        raise asyncio.CancelledError
    assert [(r.status, r.outcome) for r in recorded] == [(500, "internal")]
