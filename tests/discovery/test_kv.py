"""Consul's KV store, for a pool's API keys and pool secret: reads, check-and-set writes, watches, ACLs, outages,
and `visionpool keys` on a KV key (against the agent double)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from visionpool.discovery import RegistryError
from visionpool.discovery.kv import ConsulKV, load_secret
from visionpool.proxy.keys import KeyRing, add_key, open_store, parse, revoke_key
from visionpool.serving.settings import kv_key

if TYPE_CHECKING:
    from consul_double import ConsulDouble

KEY = "visionpool/api-keys"
WHERE = f"consul:{KEY}"
SECRET = b"a pool secret of at least thirty-two bytes"


@pytest.fixture(autouse=True)
def no_token_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)


def test_consul_names_a_key_anything_else_a_file() -> None:
    assert kv_key("consul:visionpool/api-keys") == "visionpool/api-keys"
    assert kv_key("keys.json") is None and kv_key(None) is None
    with pytest.raises(ValueError, match="names no key"):
        kv_key("consul:")


def test_keys_kept_in_consul_hold_only_hashes_and_every_writer_keeps_the_others_keys(make_consul) -> None:
    consul: ConsulDouble = make_consul(token="root")
    store = open_store(WHERE, consul.url, "root")
    with pytest.raises(ValueError, match="has no such key"):
        store.read()
    alice = add_key(store, "alice", rate=5, burst=5, models=["cat"])
    value = ConsulKV(consul.url, "root").get(KEY)[1]
    assert value is not None and alice.split("_", 2)[2] not in value.decode()
    assert set(parse(value, WHERE)) == {"alice"}

    # another writer slips in between this one's read and its write: the check-and-set fails, it reads again
    kv, raced = ConsulKV(consul.url, "root"), threading.Event()
    original = kv._client.kv.put

    def put_after_a_rival(key: str, value: bytes, cas: int | None = None) -> bool:
        if not raced.is_set():
            raced.set()
            add_key(open_store(WHERE, consul.url, "root"), "carol", rate=1, burst=1, models=[])
        return bool(original(key, value, cas=cas))

    kv._client.kv.put = put_after_a_rival  # type: ignore[method-assign]
    store.kv = kv  # type: ignore[attr-defined]
    add_key(store, "bob", rate=1, burst=1, models=[])
    assert set(store.read()) == {"alice", "bob", "carol"}
    assert len([r for r in consul.requests_to(f"/v1/kv/{KEY}") if r.method == "PUT"]) == 4  # one write retried

    revoke_key(store, "alice")
    assert set(store.read()) == {"bob", "carol"}
    with pytest.raises(ValueError, match="no key called 'alice'"):
        revoke_key(store, "alice")


def test_without_the_token_consul_refuses_and_says_which_permission(make_consul) -> None:
    consul: ConsulDouble = make_consul(token="root")
    consul.kv_put(KEY, b'{"keys": {}}')
    with pytest.raises(RegistryError, match="anonymous token lacks permission 'key:read'"):
        ConsulKV(consul.url).get(KEY)
    with pytest.raises(RegistryError, match="ACL not found"):
        open_store(WHERE, consul.url, "wrong").read()
    with pytest.raises(RegistryError, match="anonymous token lacks permission"):
        add_key(open_store(WHERE, consul.url), "alice", 1, 1, [])
    assert consul_value(consul) == '{"keys": {}}'


@pytest.mark.slow
def test_the_command_line_writes_a_consul_key(make_consul) -> None:
    consul: ConsulDouble = make_consul(token="root")
    base = [sys.executable, "-m", "visionpool.client", "keys"]
    where = ["--file", WHERE, "--consul-url", consul.url]

    def keys(*args: str, token: str = "root") -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args, *where, "--consul-token", token], capture_output=True, text=True,
                              timeout=60)  # fmt: skip

    added = keys("add", "alice", "--rate", "3")
    assert added.returncode == 0, added.stderr
    key = added.stdout.split()[0]
    assert key.startswith("vp_") and key.split("_", 2)[2] not in (consul_value(consul) or "")
    listed = keys("list")
    assert json.loads(listed.stdout)["alice"]["rate"] == 3 and "sha256" not in listed.stdout
    refused = keys("list", token="wrong")
    assert refused.returncode == 2 and "ACL not found" in refused.stderr and "Traceback" not in refused.stderr


def consul_value(consul: ConsulDouble) -> str | None:
    value = ConsulKV(consul.url, consul.token).get(KEY)[1]
    return value.decode() if value is not None else None


def watch_values(kv: ConsulKV, key: str, seen: list[bytes | None], stop: threading.Event) -> threading.Thread:
    """Run kv.watch(key) in a thread, appending what it yields until ``stop`` is set."""

    async def consume() -> None:
        async def read() -> None:
            async for value in kv.watch(key):
                seen.append(value)

        task = asyncio.create_task(read())
        while not stop.is_set():
            await asyncio.sleep(0.02)
        task.cancel()

    thread = threading.Thread(target=asyncio.run, args=(consume(),), daemon=True)
    thread.start()
    return thread


def wait_for(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``condition`` held; fails past ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "the watch did not see the change in time"
        time.sleep(0.01)
    return time.monotonic() - started


def test_a_watch_sees_each_change_at_once_and_rides_out_an_outage(make_consul) -> None:
    consul: ConsulDouble = make_consul(token="root")
    seen: list[bytes | None] = []
    stop = threading.Event()
    thread = watch_values(ConsulKV(consul.url, "root"), KEY, seen, stop)
    try:
        wait_for(lambda: seen == [None], 5)  # missing at first: said once
        consul.kv_put(KEY, b"one")
        assert wait_for(lambda: seen[-1:] == [b"one"], 5) < 1.0  # a blocking query answers on the change
        consul.kv_put("visionpool/other", b"x")  # another key: nothing to say
        consul.kv_put(KEY, b"one")  # the same value written again: nothing to say
        time.sleep(0.3)
        assert seen == [None, b"one"]
        consul.stop()  # the agent goes away; the watch keeps what it read and tries again
        time.sleep(0.5)
        consul.start()
        consul.kv_put(KEY, b"two")
        wait_for(lambda: seen[-1:] == [b"two"], 10)
        assert seen == [None, b"one", b"two"]
    finally:
        stop.set()
        thread.join(timeout=10)


def test_the_pool_secret_from_a_consul_key(make_consul, tmp_path) -> None:
    consul: ConsulDouble = make_consul(token="root")
    with pytest.raises(ValueError, match="has no such key .*consul kv put visionpool/pool-secret"):
        load_secret("consul:visionpool/pool-secret", consul.url, "root")  # type: ignore[arg-type]
    consul.kv_put("visionpool/pool-secret", b"short")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        load_secret("consul:visionpool/pool-secret", consul.url, "root")  # type: ignore[arg-type]
    consul.kv_put("visionpool/pool-secret", SECRET + b"\n")
    assert load_secret("consul:visionpool/pool-secret", consul.url, "root") == SECRET  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pool secret: consul at .* key:read"):
        load_secret("consul:visionpool/pool-secret", consul.url, None)  # type: ignore[arg-type]
    (tmp_path / "pool.secret").write_bytes(SECRET)
    assert load_secret(tmp_path / "pool.secret", consul.url, None) == SECRET  # a file needs no Consul


def test_a_key_ring_on_consul_refuses_everything_until_the_keys_are_read(make_consul) -> None:
    consul: ConsulDouble = make_consul()
    store = open_store(WHERE, consul.url)
    key = add_key(store, "alice", 10, 10, [])
    ring = KeyRing(WHERE)
    with pytest.raises(Exception, match="not valid"):
        ring.admit(f"Bearer {key}", None)
    ring.load(store.read())
    assert ring.admit(f"Bearer {key}", None) == "alice"
