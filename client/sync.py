"""The blocking client, over requests.

Usage:
    with Client("http://127.0.0.1:8080") as client:        # p2p by default
        result = client.predict("cat.jpg")
        for path, outcome in client.predict_many(paths, concurrency=8):
            ...
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

import requests

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


class Client:
    """Predicts through a visionpool proxy, in p2p or proxy mode."""

    def __init__(
        self, url: str, *, mode: str = "p2p", model: str | None = None, timeout: float = 30.0, retries: int = 3
    ) -> None:
        self.route = Route(url, mode)
        self.model, self.timeout, self.retries = model, timeout, retries
        self._local = threading.local()  # one requests.Session per thread

    def predict(
        self, image: ImageInput, *, model: str | None = None, threshold: float | None = None, top_k: int | None = None
    ) -> Result:
        """Predict one image (a path, bytes, a binary file, a PIL image or a numpy array)."""
        flow = predict_flow(self.route, image_bytes(image), model or self.model, query(threshold, top_k), self.retries)
        return self._run(flow)  # type: ignore[no-any-return]

    def predict_many(
        self, images: Iterable[T], *, concurrency: int = 8, **options: Any
    ) -> Iterator[tuple[T, Result | Exception]]:
        """Predict many images, ``concurrency`` at a time; yields (image, result or error) as each completes."""
        with ThreadPoolExecutor(concurrency) as pool:
            pending: dict[Future[Result], T] = {}
            for image in images:
                if len(pending) >= concurrency * 2:
                    yield from _completed(pending)
                pending[pool.submit(self.predict, image, **options)] = image  # type: ignore[arg-type]
            while pending:
                yield from _completed(pending)

    def lookup(self, model: str | None = None) -> dict[str, Any]:
        """The worker the proxy would hand out next."""
        return self._run(lookup_flow(self.route, model or self.model))  # type: ignore[no-any-return]

    def workers(self) -> list[dict[str, Any]]:
        """The proxy's healthy workers."""
        return self._run(get_flow(self.route, "/workers"))["workers"]  # type: ignore[no-any-return]

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, flow: Flow) -> Any:
        outcome: Outcome = None
        while True:
            try:
                step = flow.send(outcome)
            except StopIteration as done:
                return done.value
            if isinstance(step, Request):
                outcome = self._send(step)
            else:
                time.sleep(step.seconds)
                outcome = None

    def _send(self, request: Request) -> Outcome:
        session = getattr(self._local, "session", None) or self._new_session()
        try:
            answer = session.request(
                request.method,
                request.url,
                params=request.params,
                headers=request.headers,
                data=request.body,
                timeout=self.timeout,
            )
        except requests.Timeout as error:
            return TimeoutError(str(error))
        except requests.RequestException as error:
            return error
        return Response(answer.status_code, dict(answer.headers), answer.content)

    def _new_session(self) -> requests.Session:
        self._local.session = requests.Session()
        return self._local.session


def _completed(pending: dict[Future[Result], T]) -> Iterator[tuple[T, Result | Exception]]:
    done, _ = wait(pending, return_when=FIRST_COMPLETED)
    for future in done:
        image = pending.pop(future)
        error = future.exception()
        yield image, (error if isinstance(error, Exception) else future.result())
