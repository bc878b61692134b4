"""The blocking client, over requests.

Usage:
    with Client("http://127.0.0.1:8080") as client:        # p2p by default
        result = client.predict("cat.jpg")
        for path, outcome in client.predict_many(paths, concurrency=8):
            ...
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

import requests

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


class Client:
    """Predicts through a visionpool proxy, in p2p or proxy mode, over /predict or the v2 protocol."""

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
        self.verify = verify  # as requests takes it: True (the system's CAs), a CA file for a private pool, False
        self.cert = cert  # as requests takes it: a PEM file with certificate and key, or (certificate, key) files
        self.api_key = api_key  # sent to the proxy alone (Authorization: Bearer), when the pool has keys
        self.model, self.timeout, self.retries = model, timeout, retries
        self._local = threading.local()  # one requests.Session per thread
        self._sessions: list[requests.Session] = []  # every thread's, so that close() closes them all
        self._sessions_lock = threading.Lock()

    def predict(
        self, image: ImageInput, *, model: str | None = None, threshold: float | None = None, top_k: int | None = None
    ) -> Result:
        """Predict one image (a path, bytes, a binary file, a PIL image or a numpy array)."""
        return self._predict(image, 0, model, threshold, top_k)

    def _predict(
        self,
        image: ImageInput,
        slot: int,
        model: str | None = None,
        threshold: float | None = None,
        top_k: int | None = None,
    ) -> Result:
        data = image_bytes(image)
        flow = predict_flow(self.route, data, model or self.model, threshold, top_k, self.retries, slot)
        return self._run(flow)  # type: ignore[no-any-return]

    def predict_many(
        self, images: Iterable[T], *, concurrency: int = 8, **options: Any
    ) -> Iterator[tuple[T, Result | Exception]]:
        """Predict many images, ``concurrency`` at a time; yields (image, result or error) as each completes.

        In p2p mode each of the ``concurrency`` threads keeps a worker of its own, so they spread over the pool.
        """
        slots, local = itertools.count(1), threading.local()

        def in_slot(image: T) -> Result:
            if not hasattr(local, "slot"):
                local.slot = next(slots)
            return self._predict(image, local.slot, **options)  # type: ignore[arg-type]

        with ThreadPoolExecutor(concurrency) as pool:
            pending: dict[Future[Result], T] = {}
            for image in images:
                if len(pending) >= concurrency * 2:
                    yield from _completed(pending)
                pending[pool.submit(in_slot, image)] = image
            while pending:
                yield from _completed(pending)

    def lookup(self, model: str | None = None) -> dict[str, Any]:
        """The worker the proxy would hand out next."""
        return self._run(lookup_flow(self.route, model or self.model))  # type: ignore[no-any-return]

    def workers(self) -> list[dict[str, Any]]:
        """The proxy's healthy workers."""
        return self._run(get_flow(self.route, WORKERS))["workers"]  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close every thread's connections (predict_many's threads' too)."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
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
                headers=signed(request.headers, request.url, self.route.url, self.api_key),
                data=request.body,
                verify=self.verify,  # per request: REQUESTS_CA_BUNDLE would override the session's
                cert=self.cert,  # for a pool whose listeners ask for client certificates (--tls-client-ca)
                timeout=(min(self.timeout, links.CONNECT_SECONDS), self.timeout),
            )
        except requests.Timeout as error:
            return TimeoutError(str(error))
        except requests.TooManyRedirects as error:
            return ValueError(str(error))  # not worth retrying, like a malformed URL (a ValueError already)
        except requests.RequestException as error:
            return error
        return Response(answer.status_code, {k.lower(): v for k, v in answer.headers.items()}, answer.content)

    def _new_session(self) -> requests.Session:
        session = self._local.session = requests.Session()
        with self._sessions_lock:
            self._sessions.append(session)
        for scheme in ("http://", "https://"):
            session.mount(scheme, links.LinkAdapter())  # dead links seen in seconds
        return session


def _completed(pending: dict[Future[Result], T]) -> Iterator[tuple[T, Result | Exception]]:
    done, _ = wait(pending, return_when=FIRST_COMPLETED)
    for future in done:
        image = pending.pop(future)
        error = future.exception()
        yield image, (error if isinstance(error, Exception) else future.result())
