"""The Python client against a real pool: both modes, every input type, failover, typed errors."""

from __future__ import annotations

import asyncio
import io
import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import iou, sample, scrape, wait_until
from PIL import Image

from visionpool.client import AsyncClient, BadImage, BadRequest, Box, Client, ModelNotFound, Result, Unavailable

pytestmark = pytest.mark.slow  # every test here starts processes

CAT_BOX = {"x": 9, "y": 0, "width": 399, "height": 297}
MODES = [pytest.param("p2p", id="p2p"), pytest.param("proxy", id="proxy")]


def assert_cat(result: Result) -> None:
    best = result.predictions[0]
    assert best.label == "cat" and best.score > 0.85 and isinstance(best.box, Box)
    assert iou(vars(best.box), CAT_BOX) > 0.8
    assert (result.width, result.height) == (451, 300) and result.model == "ssd-mobilenet-v2"


@pytest.mark.parametrize("mode", MODES)
def test_every_input_type_in_both_modes(make_pool, photo_files, photos, mode: str) -> None:
    pool = make_pool(2)
    path = photo_files["chelsea"]
    inputs = {
        "str path": str(path),
        "Path": path,
        "bytes": path.read_bytes(),
        "file": io.BytesIO(path.read_bytes()),
        "PIL image": Image.open(path),
        "numpy array": photos["chelsea"],
    }
    with Client(pool.url, mode=mode) as client:
        for kind, image in inputs.items():
            result = client.predict(image)
            assert_cat(result)
            assert result.worker_id in {w.url.removeprefix("http://") for w in pool.workers}, kind
            assert result.request_id and result.timings["total"] > 0


def test_p2p_keeps_its_worker_while_it_answers(make_pool, photo_files) -> None:
    pool = make_pool(2)
    with Client(pool.url) as client:
        served = {client.predict(photo_files["coffee"]).worker_id for _ in range(6)}
    assert len(served) == 1  # posted straight to one worker, no lookup per image


def test_p2p_fails_over_when_its_worker_dies(make_pool, photo_files) -> None:
    pool = make_pool(2)
    with Client(pool.url) as client:
        first = client.predict(photo_files["chelsea"]).worker_id
        victim = next(w for w in pool.workers if w.url.endswith(first))
        victim.stop(signal.SIGKILL)
        after = client.predict(photo_files["chelsea"])
    assert_cat(after)
    assert after.worker_id != first


def test_typed_errors_carry_the_servers_code(make_pool) -> None:
    pool = make_pool(1)
    with Client(pool.url, mode="proxy") as client:
        with pytest.raises(BadImage) as bad:
            client.predict(b"not an image")
        assert bad.value.code == "invalid_image" and bad.value.status == 400 and "decode" in bad.value.message
    for mode in ("proxy", "p2p"):
        with Client(pool.url, mode=mode, model="nope") as client, pytest.raises(ModelNotFound) as unknown:
            client.predict(b"x")
        assert unknown.value.code == "model_not_found" and "ssd-mobilenet-v2" in unknown.value.message
    pool.workers[0].stop()
    with Client(pool.url, retries=1) as client, pytest.raises(Unavailable) as none:
        client.predict(b"x")
    assert none.value.code == "no_worker" and none.value.retry_after == 1.0


def test_overloaded_answers_are_retried_after_retry_after(make_pool) -> None:
    pool = make_pool(1, model="sleepy", seconds=0.3, max_batch_size=1, max_queue_size=1)
    image = np.zeros((8, 8, 3), np.uint8)
    with Client(pool.url, mode="proxy", retries=0) as client:
        refused = [o for _, o in client.predict_many([image] * 4, concurrency=4) if isinstance(o, Unavailable)]
    assert refused and all(e.code == "overloaded" and e.retry_after == 1.0 for e in refused)
    with Client(pool.url, mode="proxy", retries=5) as client:
        outcomes = [outcome for _, outcome in client.predict_many([image] * 4, concurrency=4)]
    assert all(isinstance(o, Result) for o in outcomes), outcomes


@pytest.mark.parametrize("mode", MODES)
def test_async_client(make_pool, photo_files, mode: str) -> None:
    pool = make_pool(2)

    async def main() -> list[Result | Exception]:
        async with AsyncClient(pool.url, mode=mode) as client:
            assert_cat(await client.predict(photo_files["chelsea"]))
            assert (await client.lookup())["url"].startswith("http://127.0.0.1:")
            paths = [photo_files[name] for name in ("chelsea", "coffee", "camera", "rocket")] * 3
            found: dict[str, list] = {}
            async for path, outcome in client.predict_many(paths, concurrency=4):
                found.setdefault(path.stem, []).append(outcome)
            return found  # type: ignore[return-value]

    found = asyncio.run(main())
    tops = {
        name: {o.predictions[0].label if o.predictions else None for o in outcomes} for name, outcomes in found.items()
    }  # type: ignore[union-attr]
    assert tops == {"chelsea": {"cat"}, "coffee": {"cup"}, "camera": {"person"}, "rocket": {None}}


def test_bad_arguments_are_refused_early(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode must be"):
        Client("http://127.0.0.1:1", mode="direct")
    with pytest.raises(ValueError, match="url must look like"):
        Client("127.0.0.1:8080")
    with pytest.raises(FileNotFoundError):
        Client("http://127.0.0.1:1").predict(tmp_path / "missing.jpg")


def test_p2p_spreads_concurrent_requests_over_the_workers(make_pool) -> None:
    pool = make_pool(3, model="sleepy", seconds=0.02)
    image = np.zeros((8, 8, 3), np.uint8)
    with Client(pool.url, mode="p2p") as client:
        served = Counter(o.worker_id for _, o in client.predict_many([image] * 60, concurrency=6))

    async def spread_async() -> Counter[str | None]:
        async with AsyncClient(pool.url, mode="p2p") as client:
            return Counter([o.worker_id async for _, o in client.predict_many([image] * 60, concurrency=6)])

    for counts in (served, asyncio.run(spread_async())):
        assert len(counts) == 3 and min(counts.values()) >= 10, counts  # each slot sticks to its own worker


def test_a_malformed_url_fails_at_once_without_retries() -> None:
    started = time.monotonic()
    with Client("http://[::1:80", retries=5) as client, pytest.raises(BadRequest) as bad:
        client.predict(b"x")
    assert bad.value.code == "invalid_request" and time.monotonic() - started < 0.5


def test_close_closes_every_threads_connections(make_pool) -> None:
    pool = make_pool(1, seconds=0.02)
    image = np.zeros((8, 8, 3), np.uint8)

    def connections() -> float:
        return sample(scrape(pool.url), "visionpool_proxy_front_door_connections")

    client = Client(pool.url, mode="proxy")
    assert len(list(client.predict_many([image] * 24, concurrency=4))) == 24
    assert connections() >= 4  # the four threads' keep-alive connections, and the scrape's own
    client.close()
    wait_until(lambda: connections() <= 1)  # the scrape's own
