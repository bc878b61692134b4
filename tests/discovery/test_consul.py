"""ConsulRegistry against a double of the Consul agent API: what workers send, what proxies get to see."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from helpers import wait_until

from visionpool.discovery import Instance, Registry, RegistryError, ServiceSettings, create_registry
from visionpool.discovery.consul import ConsulRegistry

if TYPE_CHECKING:
    from consul_double import ConsulDouble, Watcher

HEALTH = "/v1/health/service/visionpool-worker"
W1 = Instance("w1", "http://10.0.0.1:5001", {"ssd-mobilenet-v2": "1", "yolo/v8.n": "8"})
W2 = Instance("w2", "http://10.0.0.2:5002", {"efficientnet-lite0": "2"})
W3 = Instance("w3", "http://10.0.0.3:5003", {"efficientnet-lite0": "2"})

Watch = Callable[[Registry], "Watcher"]


@pytest.fixture(autouse=True)
def no_token_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """py-consul reads CONSUL_HTTP_TOKEN; a developer's shell must not leak into these tests."""
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)


def fast(consul: ConsulDouble, **options: Any) -> ConsulRegistry:
    """A registry on the double with a short blocking wait and backoff, so watch tests stay quick."""
    return ConsulRegistry(url=consul.url, **{"wait": "1s", "retry_max": 0.2, **options})


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    """The WARNING records whose message contains ``text``."""
    return [r for r in list(caplog.records) if r.levelno == logging.WARNING and text in r.getMessage()]


def test_register_sends_the_service_definition_consul_documents(
    make_consul: Callable[..., ConsulDouble], monkeypatch: pytest.MonkeyPatch
) -> None:
    consul = make_consul(token="s3cret")
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-the-environment")  # the explicit token must win
    registry = ConsulRegistry(
        url=consul.url, token="s3cret", check_interval="3s", check_timeout="1s", deregister_after="5m"
    )
    registry.register(Instance("gpu-1:5000", "http://10.1.2.3:5000", {"ssd-mobilenet-v2": "1", "yolo/v8.n": "8"}))

    (request,) = consul.requests_to("/v1/agent/service/register")
    assert request.method == "PUT"
    assert request.headers["x-consul-token"] == "s3cret"
    service = consul.services["gpu-1:5000"]
    assert service["Service"] == "visionpool-worker"
    assert (service["Address"], service["Port"]) == ("10.1.2.3", 5000)
    assert service["Tags"] == ["visionpool", "model=ssd-mobilenet-v2", "model=yolo/v8.n"]
    # "yolo/v8.n" is no valid meta key: the double answers 400 like Consul unless it is sanitised
    assert service["Meta"] == {"url": "http://10.1.2.3:5000", "model_ssd-mobilenet-v2": "1", "model_yolo_v8_n": "8"}
    (check,) = consul.checks_of("gpu-1:5000")
    assert check["CheckID"] == "service:gpu-1:5000"
    assert check["Definition"] == {
        "HTTP": "http://10.1.2.3:5000/readyz",
        "Interval": "3s",
        "Timeout": "1s",
        "DeregisterCriticalServiceAfter": "5m",
    }


def test_deregister_removes_the_worker_and_its_check(consul: ConsulDouble) -> None:
    registry = fast(consul)
    registry.register(W1)
    registry.register(W2)

    registry.deregister(W1)
    assert set(consul.services) == {"w2"}
    assert consul.checks_of("w1") == []
    registry.deregister(W1)  # Consul answers 404 for a service it already reaped: the worker is gone all the same
    assert [r.method for r in consul.requests_to("/v1/agent/service/deregister/w1")] == ["PUT", "PUT"]


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        pytest.param(None, "Permission denied: anonymous token", id="no-token"),
        pytest.param("wrong", "ACL not found", id="wrong-token"),
    ],
)
def test_register_without_the_right_token_is_a_registry_error(
    make_consul: Callable[..., ConsulDouble], token: str | None, reason: str
) -> None:
    consul = make_consul(token="s3cret")
    with pytest.raises(RegistryError, match=reason) as error:
        ConsulRegistry(url=consul.url, token=token).register(W1)
    assert consul.url in str(error.value)
    assert "service:write" in str(error.value)
    assert consul.services == {}


def test_register_with_the_agent_down_names_the_consul_url(consul: ConsulDouble) -> None:
    consul.stop()
    with pytest.raises(RegistryError, match=f"cannot reach consul at {re.escape(consul.url)}"):
        fast(consul).register(W1)


def test_consul_rejections_reach_the_caller(consul: ConsulDouble) -> None:
    with pytest.raises(RegistryError, match="Invalid service address"):
        fast(consul).register(Instance("w0", "http://0.0.0.0:5000"))
    assert consul.services == {}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"url": "consul:8500"}, "http://consul:8500", id="no-scheme"),
        pytest.param({"url": "ftp://consul:8500"}, "http://consul:8500", id="wrong-scheme"),
        pytest.param({"url": "http://consul"}, "http://consul:8500", id="no-port"),
        pytest.param({"wait": "30"}, "wait must be a Go duration like '2s'", id="unitless-wait"),
        pytest.param({"deregister_after": "soon"}, "deregister_after must be a Go duration", id="bad-deregister"),
        pytest.param({"retry_max": 0}, "retry_max must be a positive number", id="zero-backoff"),
    ],
)
def test_bad_options_say_what_to_pass(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ConsulRegistry(**options)


def test_the_factory_builds_consul_and_names_the_choices() -> None:
    settings = ServiceSettings(registry="consul", consul_url="http://consul.internal:8500", consul_token="t")
    for role in ("worker", "proxy"):
        registry = create_registry(settings, role)
        assert isinstance(registry, ConsulRegistry)
        assert (registry.host, registry.port, registry.renew_interval) == ("consul.internal", 8500, 3.0)
    with pytest.raises(ValueError, match="choose one of local, consul"):
        create_registry(ServiceSettings(registry="nope"), "proxy")


def test_watch_follows_registrations_and_checks_with_blocking_queries(consul: ConsulDouble, watch: Watch) -> None:
    registry = fast(consul)
    registry.register(W1)
    watcher = watch(registry)
    wait_until(lambda: watcher.ids() == {"w1"}, timeout=5)
    assert watcher.latest == [W1]  # URL and exact model names survive the trip through tags and meta

    registry.register(W2)
    wait_until(lambda: watcher.ids() == {"w1", "w2"}, timeout=3)
    consul.set_status("w1", "critical")
    wait_until(lambda: watcher.ids() == {"w2"}, timeout=3)
    assert watcher.latest == [W2]

    health = consul.requests_to(HEALTH)
    assert "index" not in health[0].query
    assert all(int(r.query["index"]) > 0 and r.query["wait"] == "1s" for r in health[1:]), "not blocking queries"
    assert all("passing" in r.query for r in health)
    assert len(health) <= 8, f"{len(health)} queries for 3 changes: polling, not blocking"


def test_new_workers_get_no_traffic_before_their_first_passing_check(
    make_consul: Callable[..., ConsulDouble], watch: Watch
) -> None:
    consul = make_consul(auto_pass=False)  # Consul starts every check critical
    registry = fast(consul)
    registry.register(W1)
    watcher = watch(registry)
    wait_until(lambda: watcher.latest == [], timeout=5)
    consul.set_status("w1", "passing")
    wait_until(lambda: watcher.ids() == {"w1"}, timeout=3)


def test_watch_yields_only_real_changes(consul: ConsulDouble, watch: Watch) -> None:
    registry = fast(consul)
    registry.register(W1)
    watcher = watch(registry)
    wait_until(lambda: watcher.ids() == {"w1"}, timeout=5)

    consul.touch("w1")  # the index moves, the passing set does not
    touched = str(consul.index_of("visionpool-worker"))
    wait_until(lambda: any(r.query.get("index") == touched for r in consul.requests_to(HEALTH)), timeout=3)
    assert watcher.seen == [[W1]]


def test_an_agent_outage_keeps_the_last_known_workers(
    consul: ConsulDouble, watch: Watch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="visionpool.discovery.consul")
    registry = fast(consul)
    registry.register(W1)
    registry.register(W2)
    watcher = watch(registry)
    wait_until(lambda: watcher.ids() == {"w1", "w2"}, timeout=5)

    consul.stop()
    wait_until(lambda: len(warnings_about(caplog, "keeping the last known instances")) >= 3, timeout=5)
    assert watcher.ids() == {"w1", "w2"}

    consul.start()
    consul.set_status("w2", "critical")
    wait_until(lambda: watcher.ids() == {"w1"}, timeout=3)
    assert [] not in watcher.seen
    assert len(watcher.seen) == 2
    assert len([r for r in caplog.records if "answers again" in r.getMessage()]) == 1


def test_a_rebuilt_agent_resets_the_blocking_index(consul: ConsulDouble, watch: Watch) -> None:
    registry = fast(consul, wait="2s")
    registry.register(W1)
    watcher = watch(registry)
    wait_until(lambda: watcher.ids() == {"w1"}, timeout=5)

    consul.stop()
    consul.forget()  # a new agent: nothing registered, the index starts over far below the watcher's
    consul.start()
    registry.register(W2)
    wait_until(lambda: watcher.ids() == {"w2"}, timeout=5)  # the old index blocks for one wait at most

    started = time.monotonic()
    registry.register(W3)
    wait_until(lambda: watcher.ids() == {"w2", "w3"}, timeout=5)
    assert time.monotonic() - started < 1.0, "still blocking on the old index instead of starting over"


def test_watchers_see_only_what_their_token_may_read(
    make_consul: Callable[..., ConsulDouble], watch: Watch, caplog: pytest.LogCaptureFixture
) -> None:
    consul = make_consul(token="s3cret")
    ConsulRegistry(url=consul.url, token="s3cret").register(W1)

    trusted = watch(fast(consul, token="s3cret"))
    anonymous = watch(fast(consul))
    wrong = watch(fast(consul, token="wrong"))
    wait_until(lambda: trusted.ids() == {"w1"} and anonymous.latest == [], timeout=5)
    wait_until(lambda: bool(warnings_about(caplog, "ACL not found")), timeout=5)
    assert warnings_about(caplog, "give the watcher service:read"), "an empty pool with no hint why"
    assert wrong.seen == []


def test_a_watch_stops_when_cancelled_just_as_its_query_fails(
    make_consul: Callable[..., ConsulDouble], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy shutting down at the moment the agent refuses a query: the watch still ends (on Python 3.11,
    asyncio.wait_for turned that cancellation into the query's error, and the watch retried for ever)."""
    registry = fast(make_consul(token="s3cret"), token="wrong")
    refused = registry._query

    async def refused_then_cancelled(*args: Any) -> Any:
        try:
            return await refused(*args)
        finally:
            watching.cancel()

    monkeypatch.setattr(registry, "_query", refused_then_cancelled)

    async def exercise() -> None:
        nonlocal watching
        updates = registry.watch()
        watching = asyncio.ensure_future(anext(updates))
        await asyncio.wait({watching}, timeout=5)
        assert watching.cancelled(), "the watch went on after it was cancelled"
        await updates.aclose()

    watching: asyncio.Future[Any]
    asyncio.run(exercise())


def test_stopping_a_watch_closes_its_consul_session(consul: ConsulDouble, watch: Watch) -> None:
    registry = fast(consul)
    registry.register(W1)
    watcher = watch(registry)
    wait_until(lambda: watcher.ids() == {"w1"}, timeout=5)

    watcher.stop()
    assert watcher.loop_errors == []


class Readyz:
    """A worker's /readyz on loopback whose answer the test sets (a real HTTP server in a thread)."""

    def __init__(self) -> None:
        import http.server
        import threading

        owner = self
        self.status = 200

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                self.send_response(owner.status)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def readyz() -> Any:
    """A /readyz the double's HTTP checks can reach."""
    server = Readyz()
    yield server
    server.close()


def checked(consul: ConsulDouble, **options: Any) -> ConsulRegistry:
    """A registry whose checks run every 100 ms."""
    return fast(consul, check_interval="100ms", check_timeout="500ms", **options)


def status_of(consul: ConsulDouble, service_id: str) -> str | None:
    checks = consul.checks_of(service_id)
    return checks[0]["Status"] if checks else None


def test_checks_start_critical_and_follow_what_readyz_answers(make_consul, readyz: Readyz) -> None:
    consul = make_consul(run_checks=True)
    worker = Instance("w1", readyz.url, {"m": "1"})
    checked(consul).register(worker)
    assert status_of(consul, "w1") == "critical"  # as in Consul: no traffic before a first passing check
    wait_until(lambda: status_of(consul, "w1") == "passing", timeout=5)
    readyz.status = 503  # draining, or models failed
    wait_until(lambda: status_of(consul, "w1") == "critical", timeout=5)
    readyz.status = 429
    wait_until(lambda: status_of(consul, "w1") == "warning", timeout=5)


def test_a_service_critical_past_deregister_after_is_removed(make_consul, readyz: Readyz) -> None:
    consul = make_consul(run_checks=True, reap_interval=0.05, deregister_floor=0)
    checked(consul, deregister_after="300ms").register(Instance("w1", readyz.url, {"m": "1"}))
    wait_until(lambda: status_of(consul, "w1") == "passing", timeout=5)
    readyz.status = 500
    wait_until(lambda: "w1" not in consul.services, timeout=5)
    assert consul.checks_of("w1") == []


def test_renew_registers_again_only_when_the_agent_lost_the_worker(make_consul, readyz: Readyz) -> None:
    consul = make_consul(run_checks=True)
    registry = checked(consul)
    worker = Instance("w1", readyz.url, {"m": "1"})
    registry.register(worker)
    registry.renew(worker)
    assert len(consul.requests_to("/v1/agent/service/register")) == 1  # still listed: nothing to do
    consul.restart_empty()  # the agent came back without its data
    assert consul.services == {}
    registry.renew(worker)
    assert list(consul.services) == ["w1"] and len(consul.requests_to("/v1/agent/service/register")) == 2
    wait_until(lambda: status_of(consul, "w1") == "passing", timeout=5)


def test_renew_with_the_agent_down_is_a_registry_error(consul: ConsulDouble) -> None:
    registry = fast(consul)
    consul.stop()
    with pytest.raises(RegistryError, match="cannot reach consul"):
        registry.renew(W1)
