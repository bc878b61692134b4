"""The client's decisions, without a network: where it posts, when it retries, what it raises."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from visionpool.client import BadImage, ModelNotFound, Result, Timeout, TooLarge, Unavailable
from visionpool.client.core import Request, Response, Route, Sleep, predict_flow
from visionpool.client.errors import BadRequest, ServerError, UnsupportedImage, error_for

PROXY = "http://proxy:8080"
ANSWER = {
    "model": {"name": "m", "version": "1"},
    "image": {"width": 4, "height": 3},
    "predictions": [{"label": "cat", "class_id": 17, "score": 0.9, "box": {"x": 0, "y": 0, "width": 4, "height": 3}}],
    "batch_size": 1,
    "timing_ms": {"total": 5.0},
}


def ok(body: dict[str, Any] = ANSWER, **headers: str) -> Response:
    return Response(200, {k.lower(): v for k, v in headers.items()}, json.dumps(body).encode())


def error(status: int, code: str, **headers: str) -> Response:
    body = json.dumps({"error": {"code": code, "message": f"a {code} happened"}}).encode()
    return Response(status, {k.lower(): v for k, v in headers.items()}, body)


def drive(flow: Any, answer: Callable[[Request], Any]) -> tuple[Any, list[Any]]:
    """Run a flow as a driver would; every step it yields is recorded."""
    steps: list[Any] = []
    outcome = None
    while True:
        try:
            step = flow.send(outcome)
        except StopIteration as done:
            return done.value, steps
        steps.append(step)
        outcome = answer(step) if isinstance(step, Request) else None


def p2p_pool(*worker_answers: Any) -> Callable[[Request], Any]:
    """A proxy handing out w1, w2, ... in turn, and workers answering ``worker_answers`` in order."""
    handed, answers = iter(f"http://w{i}:5000" for i in range(1, 10)), iter(worker_answers)

    def answer(request: Request) -> Any:
        if request.url == PROXY + "/lookup":
            url = next(handed)
            return ok({"url": url, "worker_id": url[7:], "model": None})
        return next(answers)

    return answer


def test_p2p_looks_up_once_then_posts_straight_to_its_worker() -> None:
    route = Route(PROXY, "p2p")
    result, steps = drive(predict_flow(route, b"img", None, None, None, 3), p2p_pool(ok(**{"X-Worker-ID": "w1:5000"})))
    assert isinstance(result, Result) and result.predictions[0].label == "cat" and result.worker_id == "w1:5000"
    assert [(s.method, s.url) for s in steps] == [("GET", PROXY + "/lookup"), ("POST", "http://w1:5000/predict")]
    assert steps[1].body == b"img" and steps[1].headers["X-Request-ID"]
    _, again = drive(predict_flow(route, b"img", None, None, None, 3), p2p_pool(ok()))
    assert [s.url for s in again] == ["http://w1:5000/predict"]  # the worker is kept


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client core's monotonic clock, set by the test: a p2p slot with a worker kept since 1000.0."""
    now = [1000.0]
    monkeypatch.setattr("visionpool.client.core.time.monotonic", lambda: now[0])
    return now


def p2p_slot_with_a_worker() -> Route:
    """A p2p route (refresh every 10 s) whose slot 0 has just been handed w1."""
    route = Route(PROXY, "p2p", refresh=10.0)
    drive(predict_flow(route, b"img", None, None, None, 3), p2p_pool(ok()))
    return route


def test_p2p_asks_for_a_worker_again_after_a_while_so_joining_workers_get_load(clock: list[float]) -> None:
    route = p2p_slot_with_a_worker()
    clock[0] += 9.0
    _, kept = drive(predict_flow(route, b"img", None, None, None, 3), p2p_pool(ok()))
    assert [s.url for s in kept] == ["http://w1:5000/predict"]
    clock[0] += 2.0  # past the refresh: the proxy's rotation decides again
    _, asked = drive(predict_flow(route, b"img", None, None, None, 3), p2p_pool(ok()))
    assert [s.url for s in asked] == [PROXY + "/lookup", "http://w1:5000/predict"]


def test_p2p_keeps_its_worker_when_the_proxy_is_down_at_refresh_time(clock: list[float]) -> None:
    route = p2p_slot_with_a_worker()
    clock[0] += 11.0

    def proxy_down(step):  # noqa: ANN001, ANN202
        return ConnectionRefusedError("proxy down") if step.url.startswith(PROXY) else ok()

    result, steps = drive(predict_flow(route, b"img", None, None, None, 3), proxy_down)
    assert isinstance(result, Result)
    assert [s.url for s in steps] == [PROXY + "/lookup", "http://w1:5000/predict"]  # answered by the worker it had
    _, after = drive(predict_flow(route, b"img", None, None, None, 3), proxy_down)
    assert [s.url for s in after] == ["http://w1:5000/predict"]  # and not asking the dead proxy every time


def test_p2p_fails_over_to_another_worker_after_retry_after() -> None:
    route = Route(PROXY, "p2p")
    pool = p2p_pool(error(503, "overloaded", **{"Retry-After": "2"}), ok())
    result, steps = drive(predict_flow(route, b"img", "m", 0.3, 5, 3), pool)
    assert isinstance(result, Result)
    assert [s if isinstance(s, Sleep) else s.url for s in steps] == [
        PROXY + "/lookup",
        "http://w1:5000/models/m/predict",
        Sleep(2.0),
        PROXY + "/lookup",
        "http://w2:5000/models/m/predict",
    ]
    assert steps[1].params == {"threshold": "0.3", "top_k": "5"}


def test_a_refused_connection_backs_off_and_retries() -> None:
    route = Route(PROXY, "proxy")
    answers = iter([ConnectionRefusedError("refused"), TimeoutError("slow"), ok()])
    result, steps = drive(predict_flow(route, b"img", None, None, None, 3), lambda request: next(answers))
    assert isinstance(result, Result)
    assert [s.seconds for s in steps if isinstance(s, Sleep)] == [0.1, 0.2]
    assert all(s.url == PROXY + "/predict" for s in steps if isinstance(s, Request))


def test_a_bad_image_is_not_retried() -> None:
    route = Route(PROXY, "proxy")
    with pytest.raises(BadImage) as caught:
        drive(predict_flow(route, b"img", None, None, None, 3), lambda request: error(400, "invalid_image"))
    assert caught.value.code == "invalid_image" and caught.value.status == 400
    assert caught.value.message == "a invalid_image happened"


def test_the_last_error_is_raised_when_retries_run_out() -> None:
    route = Route(PROXY, "proxy")
    with pytest.raises(Unavailable) as caught:
        drive(predict_flow(route, b"img", None, None, None, 2), lambda request: error(503, "no_worker"))
    assert caught.value.code == "no_worker"


def test_a_huge_retry_after_is_capped() -> None:
    route = Route(PROXY, "proxy")
    answers = iter([error(503, "overloaded", **{"Retry-After": "3600"}), ok()])
    _, steps = drive(predict_flow(route, b"img", None, None, None, 1), lambda request: next(answers))
    assert Sleep(30.0) in steps


def test_an_answer_that_is_not_ours_still_becomes_a_typed_error() -> None:
    route = Route(PROXY, "proxy")
    html = Response(502, {}, b"<html>Bad Gateway</html>")
    with pytest.raises(ServerError) as caught:
        drive(predict_flow(route, b"img", None, None, None, 0), lambda request: html)
    assert caught.value.code == "http_502" and "Bad Gateway" in caught.value.message


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        pytest.param(400, "empty_body", BadImage, id="empty"),
        pytest.param(400, "invalid_parameter", BadRequest, id="parameter"),
        pytest.param(404, "model_not_found", ModelNotFound, id="model"),
        pytest.param(413, "image_too_large", TooLarge, id="too-large"),
        pytest.param(415, "unsupported_media_type", UnsupportedImage, id="media-type"),
        pytest.param(503, "overloaded", Unavailable, id="overloaded"),
        pytest.param(504, "deadline_exceeded", Timeout, id="deadline"),
        pytest.param(500, "engine_failed", ServerError, id="engine"),
        pytest.param(401, "unauthorized", BadRequest, id="other-4xx"),
    ],
)
def test_each_answer_maps_to_its_error_type(status: int, code: str, kind: type) -> None:
    made = error_for(status, code, "m", None)
    assert type(made) is kind and made.retryable == (status >= 500)


def test_routes_refuse_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="mode must be"):
        Route(PROXY, "direct")
    with pytest.raises(ValueError, match="url must look like"):
        Route("proxy:8080", "p2p")
