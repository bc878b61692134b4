"""What a model can do on its own, in this process, with no server in the way: the limits the bench compares
the pool with.

Usage:
    measured = engine_limit(pipeline, images, [1, 2, 4, 8], seconds=5)      # decode ... postprocess, per batch
    measured = inference_limit(pipeline, images, [1, 8, 64], seconds=5)    # the engine alone, per batch
    costs = cpu_costs(pipeline, images, [1, 2], seconds=3)                  # CPU-ms of each stage, the CPU ceiling

Each runs in as many threads as the engine has runs in flight (its ``parallel``). On a GPU the
inference limit is what the device can do; the engine limit adds decoding and preprocessing in
those few threads, and the CPU ceiling says what decoding on all of this host's cores can feed.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from visionpool.tools.loadgen import Measurement
from visionpool.worker.engines import Engine, host_cores
from visionpool.worker.pipeline import Pipeline


def engine_limit(
    pipeline: Pipeline, images: Sequence[bytes], batch_sizes: Sequence[int], seconds: float
) -> list[Measurement]:
    """The model alone in this process: its whole pipeline, a batch after another in each of as many threads
    as the engine runs at once (its streams), at each batch size; with the CPU this process spent."""
    results = []
    lanes = pipeline.engine.parallel
    source = itertools.cycle(images)
    lock = threading.Lock()
    for batch_size in batch_sizes:
        pipeline.predict_batch([images[0]] * batch_size)  # warm-up at this shape
        result = Measurement("engine", batch_size)

        def lane(stop_at: float, batch_size: int = batch_size, result: Measurement = result) -> None:
            while time.monotonic() < stop_at:
                with lock:
                    batch = [next(source) for _ in range(batch_size)]
                t0 = time.monotonic()
                pipeline.predict_batch(batch)
                with lock:
                    result.latencies.append(time.monotonic() - t0)
                    result.images += batch_size

        results.append(_timed(result, lane, lanes, seconds))
    return results


def cpu_costs(pipeline: Pipeline, images: Sequence[bytes], batches: Sequence[int], seconds: float) -> dict[str, float]:
    """CPU-ms per image of each stage, measured apart: decode+preprocess in one thread, inference with every
    stream kept busy at the cheapest of ``batches`` per image (``seconds`` each), postprocessing; and the CPU ceiling
    they give: the cores / their sum. The cheapest, not the batch with the best engine limit: that pick flipped
    between runs on a 2% difference, and SSD MobileNet v2's inference costs 4-7% more an image at batch 1 than 2."""
    started, decoded = time.process_time(), 0
    while decoded < 32 or time.process_time() - started < min(seconds / 6, 0.5):  # half a second: a steadier figure
        prepared = [pipeline.prepare(pipeline.decode(data)) for data in images]
        decoded += len(prepared)
    decode_ms = (time.process_time() - started) * 1000 / decoded
    inference = min(inference_limit(pipeline, images, batches, seconds), key=_cpu_per_image)
    infer_ms = _cpu_per_image(inference) * 1000
    outputs = pipeline.engine.run(prepared[0][0][None])
    image, (_, frame) = pipeline.decode(images[0]), prepared[0]
    started, threshold, top_k = (
        time.process_time(),
        pipeline.config.output.score_threshold,
        pipeline.config.output.top_k,
    )
    for _ in range(50):
        pipeline.postprocess(outputs[0], frame, image, threshold, top_k)
    post_ms = (time.process_time() - started) * 1000 / 50
    total = decode_ms + infer_ms + post_ms
    return {
        "decode_preprocess_cpu_ms": round(decode_ms, 2),
        "inference_cpu_ms": round(infer_ms, 2),
        "postprocess_cpu_ms": round(post_ms, 2),
        "inference_batch": inference.concurrency,
        "cpu_ms_per_image": round(total, 2),
        "cpu_ceiling_images_per_s": round(host_cores() * 1000 / total, 1),
    }


def _cpu_per_image(measured: Measurement) -> float:
    return measured.cpu["worker"] / max(measured.images, 1)


def inference_limit(
    pipeline: Pipeline, images: Sequence[bytes], batch_sizes: Sequence[int], seconds: float
) -> list[Measurement]:
    """The engine alone: prepared inputs, one ``engine.run`` after another in each of its lanes, at each batch
    size (within the engine's own cap); the images are decoded and preprocessed once, beforehand."""
    tensors = [pipeline.prepare(pipeline.decode(data))[0] for data in images]
    results = []
    for size in [size for size in batch_sizes if size <= pipeline.engine.max_batch_size]:
        batches = [np.stack([tensors[(i + j) % len(tensors)] for j in range(size)]) for i in range(4)]
        pipeline.engine.run(batches[0])  # warm-up at this shape
        result = Measurement("inference", size)
        lane = functools.partial(_inference_lane, pipeline.engine, itertools.cycle(batches), threading.Lock(), result)
        results.append(_timed(result, lane, pipeline.engine.parallel, seconds))
    return results


def _inference_lane(
    engine: Engine, batches: Iterator[np.ndarray], lock: threading.Lock, result: Measurement, stop_at: float
) -> None:
    while time.monotonic() < stop_at:
        with lock:
            batch = next(batches)
        started = time.monotonic()
        engine.run(batch)
        with lock:
            result.latencies.append(time.monotonic() - started)
            result.images += len(batch)


def _timed(result: Measurement, lane: Callable[[float], None], lanes: int, seconds: float) -> Measurement:
    """Run ``lanes`` copies of ``lane`` for ``seconds``; the time and this process's CPU go into ``result``."""
    started, cpu = time.monotonic(), time.process_time()
    with ThreadPoolExecutor(lanes) as pool:
        list(pool.map(lane, [started + seconds] * lanes))
    result.seconds = time.monotonic() - started
    result.cpu = {"worker": time.process_time() - cpu}  # this process runs the model: the worker's part
    return result
