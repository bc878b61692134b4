"""The local registry: the worker's half against a real proxy, the proxy's half in this process."""

from __future__ import annotations

import asyncio
import time

import pytest
import requests
from helpers import wait_until

from visionpool.discovery import Instance, RegistryError
from visionpool.discovery.local import EmbeddedRegistry, LocalRegistry, load_or_create_token, parse_payload, payload

W1 = Instance("w 1", "http://127.0.0.1:9", {"m": "1"})


@pytest.mark.slow
def test_register_watch_and_deregister_through_a_proxy(start_proxy, tmp_path) -> None:
    token_file = tmp_path / "token"
    proxy = start_proxy("--registry-token-file", str(token_file))  # the proxy creates the token
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    registry = LocalRegistry(url=proxy.url, token_file=token_file, ttl=5)
    instance = Instance("w:1", "http://127.0.0.1:9", {"m": "1"})

    def listed() -> list[Instance]:
        headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        answer = requests.get(proxy.url + "/registry/instances", headers=headers, timeout=5).json()
        return [Instance.from_json(item) for item in answer["instances"]]

    registry.register(instance)
    wait_until(lambda: listed() == [instance])
    registry.deregister(instance)
    wait_until(lambda: listed() == [])
    registry.deregister(instance)  # already gone: not an error


@pytest.mark.slow
def test_a_wrong_or_missing_token_is_a_clear_registry_error(start_proxy, tmp_path) -> None:
    proxy = start_proxy("--registry-token", "right")
    instance = Instance("w:1", "http://127.0.0.1:9", {})
    with pytest.raises(RegistryError, match="refused our token"):
        LocalRegistry(url=proxy.url, token="wrong").register(instance)
    with pytest.raises(RegistryError, match="no registry token"):
        LocalRegistry(url=proxy.url, token_file=tmp_path / "missing").register(instance)
    with pytest.raises(ValueError, match="must look like"):
        LocalRegistry(url="proxy:8080")
    assert load_or_create_token(tmp_path / "t") == load_or_create_token(tmp_path / "t")  # made once, then kept


def proxy_app(registry: EmbeddedRegistry):
    """The real proxy app around ``registry``, served in this process on a free loopback port."""
    from aiohttp.test_utils import TestClient, TestServer

    from visionpool.proxy.app import create_app
    from visionpool.proxy.settings import ProxySettings

    return TestClient(TestServer(create_app(ProxySettings(registry_token="right"), registry)))


def test_the_embedded_registry_api_checks_token_and_payload() -> None:
    registry = EmbeddedRegistry("right", default_ttl=5)
    good = {"Authorization": "Bearer right"}

    async def exercise() -> None:
        async with proxy_app(registry) as client:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic cmlnaHQ="}):
                refused = await client.put("/registry/instances/w1", json={}, headers=headers)
                assert refused.status == 401 and (await refused.json())["error"]["code"] == "unauthorized"
                assert refused.headers["WWW-Authenticate"] == "Bearer"
            for body in ("not json", '{"url": "ftp://x", "models": {}}', '{"models": {}}', '{"url": "http://x"}'):
                bad = await client.put("/registry/instances/w1", data=body, headers=good)
                assert bad.status == 400 and "ttl" in (await bad.json())["error"]["message"]
            put = await client.put("/registry/instances/w%201", json=payload(W1, 9999), headers=good)
            assert put.status == 200 and await put.json() == {"id": "w 1", "ttl": 3600.0}  # clamped to an hour
            listed = await (await client.get("/registry/instances", headers=good)).json()
            listed_w1 = {"id": "w 1", "url": "http://127.0.0.1:9", "models": {"m": "1"}, "grpc": ""}
            assert listed == {"instances": [listed_w1]}
            assert (await client.get("/workers")).status == 200
            assert (await client.delete("/registry/instances/w%201", headers=good)).status == 200
            missing = await client.delete("/registry/instances/w%201", headers=good)
            assert missing.status == 404 and (await missing.json())["error"]["code"] == "not_found"

    asyncio.run(exercise())


def test_a_registration_not_renewed_within_its_ttl_disappears() -> None:
    registry = EmbeddedRegistry("t")

    async def follow() -> list[list[str]]:
        seen: list[list[str]] = []
        registry.register(W1, ttl=0.2)
        async for instances in registry.watch():
            seen.append([i.id for i in instances])
            if not instances:
                return seen
        return seen

    started = time.monotonic()
    assert asyncio.run(asyncio.wait_for(follow(), 5)) == [["w 1"], []]
    assert 0.2 <= time.monotonic() - started < 2


def test_payloads_round_trip_and_bad_ones_say_why() -> None:
    assert parse_payload("w 1", payload(W1, 4.0), 10.0) == (W1, 4.0)
    assert parse_payload("w 1", {"url": "http://x", "models": {}}, 10.0)[1] == 10.0
    assert parse_payload("w 1", {"url": "http://x", "models": {}, "ttl": 0}, 10.0)[1] == 0.5
    for body, why in (
        ([], "JSON object"),
        ({"url": "http://x", "models": {}, "ttl": float("nan")}, "finite"),
        ({"url": "x", "models": {}}, "http://"),
        ({"url": "http://x"}, "missing"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_payload("w", body, 10.0)
