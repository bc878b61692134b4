"""The page and its pool view on the real proxy app, in this process, with workers that answer /stats."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from visionpool.discovery import Instance
from visionpool.discovery.local import EmbeddedRegistry, payload
from visionpool.proxy import view
from visionpool.proxy.app import create_app
from visionpool.proxy.settings import ProxySettings
from visionpool.proxy.state import POOL

TOKEN = {"Authorization": "Bearer right"}


def stats(worker_id: str, state: str = "ready", **numbers: Any) -> dict[str, Any]:
    model = {"name": "ssd", "version": "1", "task": "detection", "engine": "openvino", "device": "CPU"}
    return {"id": worker_id, "state": state, "in_flight": 1, "images_per_s": 12.5, "models": [model], **numbers}


class FakeWorker:
    """A worker's /stats, served in this process; counts how often it was asked."""

    def __init__(self, worker_id: str) -> None:
        self.id, self.asked, self.state = worker_id, 0, "ready"
        app = web.Application()
        app.router.add_get("/stats", self.stats)
        self.server = TestServer(app)

    async def stats(self, request: web.Request) -> web.Response:
        self.asked += 1
        await asyncio.sleep(0.05)  # long enough for readers to overlap
        return web.json_response(stats(self.id, self.state))

    @property
    def instance(self) -> Instance:
        return Instance(self.id, str(self.server.make_url("")).rstrip("/"), {"ssd": "1"})


@contextlib.asynccontextmanager
async def pool_with(*workers: FakeWorker) -> AsyncIterator[TestClient]:
    """The real proxy app (embedded registry) with ``workers`` registered."""
    for worker in workers:
        await worker.server.start_server()
    client = TestClient(TestServer(create_app(ProxySettings(registry_token="right"), EmbeddedRegistry("right", 30))))
    await client.start_server()
    try:
        for worker in workers:
            await register(client, worker.instance)
        yield client
    finally:
        await client.close()
        for worker in workers:
            await worker.server.close()


async def register(client: TestClient, instance: Instance) -> None:
    path = f"/registry/instances/{instance.id}"
    assert (await client.put(path, json=payload(instance, 30), headers=TOKEN)).status == 200
    for _ in range(100):  # the proxy follows the registry in the background
        if instance.id in client.app[POOL].instances:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{instance.id} never joined the pool")


async def read_pool(client: TestClient) -> dict[str, Any]:
    view_now = await client.get("/pool")
    assert view_now.status == 200
    return await view_now.json()


def rows(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in document["workers"]}


def test_each_worker_shows_its_state_as_it_changes(monkeypatch) -> None:
    monkeypatch.setattr(view, "REFRESH_SECONDS", 0.0)  # every read gathers afresh

    async def exercise() -> None:
        w1, w2, w3 = FakeWorker("w1"), FakeWorker("w2"), FakeWorker("w3")
        async with pool_with(w1, w2, w3) as client:
            document = await read_pool(client)
            assert document["role"] == "proxy"
            assert {i: r["state"] for i, r in rows(document).items()} == {"w1": "ready", "w2": "ready", "w3": "ready"}
            assert rows(document)["w1"]["stats"]["images_per_s"] == 12.5
            [model] = document["models"]
            assert (model["name"], model["versions"], model["workers"], model["ready"]) == ("ssd", ["1"], 3, 3)
            assert (model["task"], model["engine"]) == ("detection", "openvino")

            client.app[POOL].eject("w1", "a test")
            w2.state = "draining"
            await w3.server.close()
            changed = rows(await read_pool(client))
            assert changed["w1"]["state"] == "ejected" and 0 < changed["w1"]["ejected_for_s"] <= 10
            assert changed["w2"]["state"] == "draining"
            assert changed["w3"]["state"] == "unreachable" and "/stats could not be read" in changed["w3"]["error"]

            assert (await client.delete("/registry/instances/w2", headers=TOKEN)).status == 200
            await asyncio.sleep(0.1)
            after = await read_pool(client)
            assert rows(after)["w2"]["state"] == "draining"  # it left the registry, and says it is draining
            w2.state = "ready"  # answering, but no longer registered: it has left, whatever it says
            left = rows(await read_pool(client))["w2"]
            assert left["state"] == "left" and left["left_s_ago"] >= 0.1
            assert [row["id"] for row in after["workers"]][-1] == "w2"  # workers that left come last
            assert after["models"][0]["workers"] == 2  # a worker that left serves nothing

    asyncio.run(exercise())


def test_readers_at_once_cost_the_workers_one_question() -> None:
    async def exercise() -> None:
        worker = FakeWorker("w1")
        async with pool_with(worker) as client:
            documents = await asyncio.gather(*(read_pool(client) for _ in range(20)))
            assert worker.asked == 1 and all(d == documents[0] for d in documents)
            await read_pool(client)  # within REFRESH_SECONDS: the same view again
            assert worker.asked == 1

    asyncio.run(exercise())


def test_the_page_is_served_read_only_with_a_content_security_policy() -> None:
    async def exercise() -> None:
        worker = FakeWorker("w1")
        async with pool_with(worker) as client:
            page = await client.get("/")
            assert page.status == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
            assert '<script src="/ui/app.js"' in await page.text()
            policy = page.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy and "default-src 'none'" in policy
            # the p2p "try it" may reach the registered worker, and nothing else
            assert f"connect-src 'self' {worker.instance.url}" in policy
            script = await client.get("/ui/app.js")
            assert script.status == 200 and script.headers["Content-Type"].startswith("text/javascript")
            assert (await client.get("/ui/style.css")).headers["X-Content-Type-Options"] == "nosniff"
            for missing in ("/ui/nope.js", "/ui/..%2Fpage.py", "/ui/index.htm"):
                assert (await client.get(missing)).status == 404, missing
            for method in ("POST", "PUT", "DELETE"):
                for path in ("/", "/pool", "/ui/app.js"):
                    assert (await client.request(method, path)).status == 405, (method, path)

    asyncio.run(exercise())
