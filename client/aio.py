"""The asyncio client, over aiohttp: the same methods as ``Client``, awaited.

Usage:
    async with AsyncClient("http://127.0.0.1:8080") as client:
        result = await client.predict("cat.jpg")
        async for path, outcome in client.predict_many(paths, concurrency=8):
            ...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any, TypeVar

import aiohttp

from .core import (
    Flow,
    ImageInput,
    Outcome,
    Request,
    Response,
    Route,
    get_flow,
    image_bytes,
    lookup_flow,
    predict_flow,
    query,
)
from .types import Result

T = TypeVar("T")


class AsyncClient:
    """Predicts through a visionpool proxy, in p2p or proxy mode, from asyncio code."""

    def __init__(
        self, url: str, *, mode: str = "p2p", model: str | None = None, timeout: float = 30.0, retries: int = 3
    ) -> None:
        self.route = Route(url, mode)
        self.model, self.retries = model, retries
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def predict(
        self, image: ImageInput, *, model: str | None = None, threshold: float | None = None, top_k: int | None = None
    ) -> Result:
        """Predict one image (a path, bytes, a binary file, a PIL image or a numpy array)."""
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
        else:
            data = await asyncio.to_thread(image_bytes, image)  # files and encoding: off the event loop
        flow = predict_flow(self.route, data, model or self.model, query(threshold, top_k), self.retries)
        return await self._run(flow)  # type: ignore[no-any-return]

    async def predict_many(
        self, images: Iterable[T], *, concurrency: int = 8, **options: Any
    ) -> AsyncIterator[tuple[T, Result | Exception]]:
        """Predict many images, ``concurrency`` at a time; yields (image, result or error) as each completes."""
        pending: set[asyncio.Task[tuple[T, Result | Exception]]] = set()

        async def one(image: T) -> tuple[T, Result | Exception]:
            try:
                return image, await self.predict(image, **options)  # type: ignore[arg-type]
            except Exception as error:  # handed to the caller, like the sync client's
                return image, error

        for image in images:
            if len(pending) >= concurrency:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    yield task.result()
            pending.add(asyncio.create_task(one(image)))
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                yield task.result()

    async def lookup(self, model: str | None = None) -> dict[str, Any]:
        """The worker the proxy would hand out next."""
        return await self._run(lookup_flow(self.route, model or self.model))  # type: ignore[no-any-return]

    async def workers(self) -> list[dict[str, Any]]:
        """The proxy's healthy workers."""
        return (await self._run(get_flow(self.route, "/workers")))["workers"]  # type: ignore[no-any-return]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, flow: Flow) -> Any:
        outcome: Outcome = None
        while True:
            try:
                step = flow.send(outcome)
            except StopIteration as done:
                return done.value
            if isinstance(step, Request):
                outcome = await self._send(step)
            else:
                await asyncio.sleep(step.seconds)
                outcome = None

    async def _send(self, request: Request) -> Outcome:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        try:
            async with self._session.request(
                request.method, request.url, params=request.params, headers=request.headers, data=request.body
            ) as answer:
                return Response(answer.status, dict(answer.headers), await answer.read())
        except asyncio.TimeoutError as error:
            return TimeoutError(str(error) or "timed out")
        except aiohttp.ClientError as error:
            return error
