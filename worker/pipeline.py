"""One model's predict pipeline: image bytes in, predictions out, the same for every caller.

Usage:
    answer = pipeline.predict(body, deadline=time.monotonic() + 30)   # the route and the warm-up: batched
    answers = pipeline.predict_batch(bodies)                         # the bench's engine limit: no queue

Stages: decode (header first, pixel limit, EXIF orientation, DCT-domain JPEG reduction),
preprocess (resize, colour order, scale, layout), inference (in the batcher's thread,
batched with other requests), postprocess (the model's decoder, then boxes in the picture's
pixels). ``predict_batch`` runs the same stages one after another in the caller's thread
with the engine called once for all: it is what "the model alone" can do.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .batching import Arrival, Batcher, Job
from .decoders import Decoder, Prediction
from .engines import Engine
from .imaging import DecodedImage, decode_image, small_jpeg
from .masks import png, polygons
from .preprocess import Frame, preprocess, smallest_picture
from .repository import ModelConfig

MASK_FORMATS = ("polygons", "png")  # how an answer gives instance masks: /predict's ?masks=
MASK_TASKS = ("segmentation",)  # tasks whose answers draw masks: their postprocessing is too long for an event loop
LOOP_INPUT_PIXELS = 320 * 320  # the largest model input preprocessed in the event loop: ~0.25 ms (fits_loop)


@dataclass
class Answer:
    """What the pipeline found in one image."""

    width: int  # the picture as displayed
    height: int
    predictions: list[dict[str, Any]]  # best first: label, class_id, score; box, mask, keypoints as the task has
    batch_size: int  # images that shared the engine call
    stages: dict[str, float] = field(default_factory=dict)  # seconds: decode, preprocess, queue, inference, postprocess
    embedding: np.ndarray | None = None  # encoders: the image's feature vector (float32)


@dataclass
class Pipeline:
    """A loaded model: its config, decoder and batcher, and the stages between them."""

    config: ModelConfig
    decoder: Decoder
    batcher: Batcher
    engine: Engine  # the first instance: what /models says of how the model runs
    max_image_pixels: int
    _waking: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False, compare=False)

    def decode(self, data: bytes) -> DecodedImage:
        """RGB pixels, reduced no further than the model's input needs; ImageTooLarge, InvalidImage."""
        return decode_image(data, max_pixels=self.max_image_pixels, min_size=smallest_picture(self.config.input))

    def prepare(self, image: DecodedImage) -> tuple[np.ndarray, Frame]:
        """The model input for one image, and where the picture sits in it."""
        return preprocess(image.pixels, self.config.input)

    def postprocess(
        self,
        outputs: dict[str, np.ndarray],
        frame: Frame,
        image: DecodedImage,
        threshold: float,
        top_k: int,
        masks: str = "polygons",
    ) -> list[dict[str, Any]]:
        """The decoder's predictions, labelled, with boxes, masks and keypoints in the picture's pixels."""
        return [self._found(p, frame, image, masks) for p in self.decoder.decode(outputs, threshold, top_k)]

    def predict(
        self,
        data: bytes,
        *,
        deadline: float,
        threshold: float | None = None,
        top_k: int | None = None,
        masks: str = "polygons",
    ) -> Answer:
        """One image through every stage, batched with whatever else is in flight."""
        return self.predict_many([data], deadline=deadline, threshold=threshold, top_k=top_k, masks=masks)[0]

    def predict_many(
        self,
        bodies: Sequence[bytes],
        *,
        deadline: float,
        threshold: float | None = None,
        top_k: int | None = None,
        masks: str = "polygons",
    ) -> list[Answer]:
        """Several images of one request: all announced and submitted before any is awaited, so they batch."""
        threshold, top_k = self._limits(threshold, top_k)
        with contextlib.ExitStack() as arrivals:
            pending = [arrivals.enter_context(self.batcher.arriving()) for _ in bodies]
            submitted = [self._submit(data, deadline, arrival) for data, arrival in zip(bodies, pending, strict=True)]
        return [self._finish(*started, threshold, top_k, masks) for started in submitted]

    async def predict_here(
        self,
        data: bytes,
        *,
        deadline: float,
        threshold: float | None = None,
        top_k: int | None = None,
        masks: str = "polygons",
    ) -> Answer:
        """One image through every stage in the calling event loop's thread, awaiting (not blocking on) the
        engine: for the images ``fits_loop`` lets through, whose stages cost less than the hand-off to a thread."""
        threshold, top_k = self._limits(threshold, top_k)
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def on_done(_: Job) -> None:  # in the batcher's thread (or this one, when the timer abandons the job)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(_settle, ended)

        wake = self.batcher.wakes_on_submit
        with self.batcher.arriving() as arrival:
            job, image, frame, stages = self._submit(data, deadline, arrival, on_done, wake=wake)
        if not wake:
            self._wake_after(loop)
        timer = loop.call_later(max(deadline - time.monotonic(), 0.0), job.abandon)
        try:
            await ended
        finally:
            timer.cancel()
            job.abandon()  # the request was cancelled while its job queued: it gives its place up (else a no-op)
        return self._finish(job, image, frame, stages, threshold, top_k, masks)

    def _wake_after(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake the batcher once ``loop`` has run what else was ready beside this request (the requests that came
        with it), unless a full batch woke it before: their jobs go to one wake-up of a batcher thread, and one move
        of the lock Python's threads share, instead of one each (no-op model: 0.018-0.036 CPU-ms a request less at 8
        clients, 0.090 at 64; docs/performance.md)."""
        if self._waking is not loop:  # a loop that closed with its wake-up pending leaves it to the next one
            self._waking = loop
            loop.call_soon(self._wake)

    def _wake(self) -> None:
        self._waking = None
        self.batcher.wake()

    def fits_loop(self, data: bytes) -> bool:
        """Whether ``predict_here`` may take this image: a small plain JPEG (imaging.small_jpeg) for a model with a
        small input and no masks to draw, so that decoding, preprocessing and postprocessing it cost the event loop
        ~0.1-0.4 ms (docs/performance.md); anything else goes to the request threads."""
        spec = self.config.input
        small_model = spec.width * spec.height <= LOOP_INPUT_PIXELS and self.config.task not in MASK_TASKS
        return small_model and small_jpeg(data, self.max_image_pixels)

    def _submit(
        self,
        data: bytes,
        deadline: float,
        arrival: Arrival,
        on_done: Callable[[Job], None] | None = None,
        wake: bool = True,
    ) -> tuple[Job, DecodedImage, Frame, dict[str, float]]:
        """Decode and preprocess one image, and queue it (ending its arrival; Batcher.submit's ``wake``)."""
        started = time.monotonic()
        image = self.decode(data)
        decoded = time.monotonic()
        tensor, frame = self.prepare(image)
        prepared = time.monotonic()
        job = self.batcher.submit(tensor, deadline, arrival, on_done, wake=wake)
        return job, image, frame, {"decode": decoded - started, "preprocess": prepared - decoded}

    def predict_tensors(
        self,
        tensors: np.ndarray,
        deadline: float,
        threshold: float | None = None,
        top_k: int | None = None,
        masks: str = "polygons",
    ) -> list[Answer]:
        """Inputs already in the model's layout, one per leading index; boxes in the input's pixels."""
        threshold, top_k = self._limits(threshold, top_k)
        size = DecodedImage(np.empty((0, 0, 3), np.uint8), self.config.input.width, self.config.input.height)
        jobs = [self.batcher.submit(np.ascontiguousarray(tensor), deadline) for tensor in tensors]
        return [self._finish(job, size, Frame(), {}, threshold, top_k, masks) for job in jobs]

    def _finish(
        self,
        job: Job,
        image: DecodedImage,
        frame: Frame,
        stages: dict[str, float],
        threshold: float,
        top_k: int,
        masks: str = "polygons",
    ) -> Answer:
        outputs = job.wait()
        ran = time.monotonic()
        predictions = self.postprocess(outputs, frame, image, threshold, top_k, masks)
        embedding = self.decoder.embed(outputs)
        stages = {**stages, "queue": job.queue_s, "inference": job.inference_s, "postprocess": time.monotonic() - ran}
        return Answer(image.width, image.height, predictions, job.batch_size, stages, embedding)

    def predict_batch(
        self, bodies: Sequence[bytes], threshold: float | None = None, top_k: int | None = None
    ) -> list[Answer]:
        """Every image through every stage in this thread, with one engine call for all (nothing else may run)."""
        threshold, top_k = self._limits(threshold, top_k)
        images = [self.decode(data) for data in bodies]
        prepared = [self.prepare(image) for image in images]
        tensors, step = np.stack([tensor for tensor, _ in prepared]), self.batcher.max_batch
        outputs = [out for i in range(0, len(tensors), step) for out in self.engine.run(tensors[i : i + step])]
        return [
            Answer(
                image.width,
                image.height,
                self.postprocess(out, frame, image, threshold, top_k),
                len(bodies),
                embedding=self.decoder.embed(out),
            )
            for image, (_, frame), out in zip(images, prepared, outputs, strict=True)
        ]

    def describe(self) -> dict[str, Any]:
        """What GET /models says of this model: its config's summary, and how its engine runs."""
        return {
            **self.config.describe(),
            **self.engine.details(),
            **self.decoder.describe(),
            "max_batch_size": self.batcher.max_batch,
            **self._batch_cap(),
            "queue_depth": self.batcher.depth(),
        }

    def _batch_cap(self) -> dict[str, Any]:
        """When the engine holds the batch below the config's: what was asked for, and why it is less."""
        if not self.batcher.batch_limit:
            return {}
        return {"configured_max_batch_size": self.batcher.configured_batch, "batch_limit": self.batcher.batch_limit}

    def label(self, class_id: int) -> str:
        labels = self.config.labels
        return labels[class_id] if 0 <= class_id < len(labels) and labels[class_id] else str(class_id)

    def close(self) -> None:
        self.batcher.close()

    def _limits(self, threshold: float | None, top_k: int | None) -> tuple[float, int]:
        output = self.config.output
        return (output.score_threshold if threshold is None else threshold), (output.top_k if top_k is None else top_k)

    def _found(self, p: Prediction, frame: Frame, image: DecodedImage, masks: str) -> dict[str, Any]:
        found: dict[str, Any] = {"label": self.label(p.class_id), "class_id": p.class_id, "score": round(p.score, 4)}
        if p.box is not None:
            found["box"] = frame.to_pixels(p.box, image.width, image.height)
        if p.mask is not None:
            size = (self.config.input.width, self.config.input.height)
            if masks == "png":
                found["mask"] = {"png": png(p.mask, frame, size, found["box"], image.width, image.height)}
            else:
                found["mask"] = {"polygons": polygons(p.mask, frame, size, image.width, image.height)}
        if p.keypoints is not None:
            points = p.keypoints.astype(np.float64)  # rounded in float64: float32 would print 0.8999999761
            xy = np.round(frame.points_to_pixels(points[:, :2], image.width, image.height), 1)
            scores = np.round(points[:, 2], 3)
            found["keypoints"] = [[x, y, s] for (x, y), s in zip(xy.tolist(), scores.tolist(), strict=True)]
        return found


def _settle(ended: asyncio.Future[None]) -> None:
    if not ended.done():  # not when the request was cancelled meanwhile
        ended.set_result(None)
