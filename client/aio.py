"""The asyncio client, over aiohttp: the same methods as ``Client``, awaited.

Usage:
    async with AsyncClient("http://127.0.0.1:8080") as client:
        result = await client.predict("cat.jpg")
        async for path, outcome in client.predict_many(paths, concurrency=8):
            ...
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterable
from typing import Any, TypeVar

import aiohttp

from . import links
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
    signed,
)
from .types import Result
from .wire import WORKERS

T = TypeVar("T")
_END = object()


class AsyncClient:
    """Predicts through a visionpool proxy (p2p or proxy mode, /predict or v2), from asyncio code."""

    def __init__(
        self,
        url: str,
        *,
        mode: str = "p2p",
        model: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        protocol: str = "predict",
        api_key: str | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
    ) -> None:
        self.route = Route(url, mode, protocol)
        # as requests takes it: True (the system's CAs), a CA file for a private pool, False (no check)
        self.tls: ssl.SSLContext | bool = verify
        if isinstance(verify, str) or cert:
            self.tls = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
            if verify is False:
                self.tls.check_hostname, self.tls.verify_mode = False, ssl.CERT_NONE
        if cert and isinstance(self.tls, ssl.SSLContext):  # as requests takes it: one PEM file, or (cert, key)
            self.tls.load_cert_chain(*((cert,) if isinstance(cert, str) else cert))
        self.api_key = api_key  # sent to the proxy alone (Authorization: Bearer), when the pool has keys
        self.model, self.retries = model, retries
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, links.CONNECT_SECONDS))
        self._session: aiohttp.ClientSession | None = None

    async def predict(
        self, image: ImageInput, *, model: str | None = None, threshold: float | None = None, top_k: int | None = None
    ) -> Result:
        """Predict one image (a path, bytes, a binary file, a PIL image or a numpy array)."""
        return await self._predict(image, 0, model, threshold, top_k)

    async def _predict(
        self,
        image: ImageInput,
        slot: int,
        model: str | None = None,
        threshold: float | None = None,
        top_k: int | None = None,
    ) -> Result:
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
        else:
            data = await asyncio.to_thread(image_bytes, image)  # files and encoding: off the event loop
        flow = predict_flow(self.route, data, model or self.model, threshold, top_k, self.retries, slot)
        return await self._run(flow)  # type: ignore[no-any-return]

    async def predict_many(
        self, images: Iterable[T], *, concurrency: int = 8, **options: Any
    ) -> AsyncIterator[tuple[T, Result | Exception]]:
        """Predict many images, ``concurrency`` at a time; yields (image, result or error) as each completes.

        In p2p mode each of the ``concurrency`` tasks keeps a worker of its own, so they spread over the pool.
        """
        source = iter(images)
        room = asyncio.Semaphore(2 * concurrency)  # images taken but not yet handed to the caller
        finished: asyncio.Queue[tuple[T, Result | Exception] | None] = asyncio.Queue()  # never blocks a put

        async def consume(slot: int) -> None:
            try:
                while True:
                    await room.acquire()
                    image = next(source, _END)  # one event loop: each next() is this task's own
                    if image is _END:
                        return
                    try:
                        outcome: Result | Exception = await self._predict(image, slot, **options)
                    except Exception as error:  # handed to the caller, like the sync client's
                        outcome = error
                    finished.put_nowait((image, outcome))  # type: ignore[arg-type]
            finally:
                finished.put_nowait(None)

        tasks = [asyncio.create_task(consume(slot)) for slot in range(1, concurrency + 1)]
        try:
            running = len(tasks)
            while running:
                item = await finished.get()
                if item is None:
                    running -= 1
                    continue
                room.release()
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def lookup(self, model: str | None = None) -> dict[str, Any]:
        """The worker the proxy would hand out next."""
        return await self._run(lookup_flow(self.route, model or self.model))  # type: ignore[no-any-return]

    async def workers(self) -> list[dict[str, Any]]:
        """The proxy's healthy workers."""
        return (await self._run(get_flow(self.route, WORKERS)))["workers"]  # type: ignore[no-any-return]

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
            connector = aiohttp.TCPConnector(socket_factory=links.socket_factory, ssl=self.tls)  # dead links: seconds
            self._session = aiohttp.ClientSession(timeout=self.timeout, connector=connector)
        try:
            async with self._session.request(
                request.method,
                request.url,
                params=request.params,
                headers=signed(request.headers, request.url, self.route.url, self.api_key),
                data=request.body,
            ) as answer:
                headers = {k.lower(): v for k, v in answer.headers.items()}
                return Response(answer.status, headers, await answer.read())
        except TimeoutError as error:
            return TimeoutError(str(error) or "timed out")
        except aiohttp.TooManyRedirects as error:
            return ValueError(str(error))  # not worth retrying, like a malformed URL (a ValueError already)
        except aiohttp.ClientError as error:
            return error
