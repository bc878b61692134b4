"""API keys at the proxy: the key file (hashes only), refusals (401, 403, 429), revocation within a second,
refusal before the body, and a pool with keys used by the client in both modes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from helpers import encode, free_port, wait_until, write_sleepy_model
from pools import secured_pool

from visionpool.client import Client
from visionpool.client.wire import Forbidden, RateLimited, Unauthorized
from visionpool.proxy.keys import KeyRing, add_key, open_store, parse, revoke_key
from visionpool.serving.tickets import issue

IMAGE = encode(np.zeros((8, 8, 3), np.uint8), "PNG")


def bearer(key: str) -> str:
    return f"Bearer {key}"


def test_the_file_holds_only_hashes_and_only_its_owner_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = add_key(open_store(path), "alice", rate=10, burst=20, models=[])
    assert key.startswith("vp_") and key.split("_", 2)[2] not in path.read_text()
    assert json.loads(path.read_text())["keys"]["alice"]["sha256"]
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError, match="has a key called 'alice' already"):
        add_key(open_store(path), "alice", rate=10, burst=20, models=[])


def test_refusals(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = add_key(open_store(path), "alice", rate=1, burst=2, models=["cat"])
    ring = KeyRing(path)
    for header in (None, "Basic abc", "Bearer ", "Bearer vp_nope_x", bearer(key[:-1] + "!")):
        with pytest.raises(Unauthorized):
            ring.admit(header, "cat")
    with pytest.raises(Forbidden, match="may not use model 'dog'; it may use cat"):
        ring.admit(bearer(key), "dog")
    with pytest.raises(Forbidden, match="name the model"):
        ring.admit(bearer(key), None)
    assert [ring.admit(bearer(key), "cat") for _ in range(2)] == ["alice", "alice"]  # the burst
    with pytest.raises(RateLimited) as limited:
        ring.admit(bearer(key), "cat")
    assert limited.value.status == 429 and limited.value.headers["Retry-After"] == "1"
    time.sleep(1.05)
    assert ring.admit(bearer(key), "cat") == "alice"  # one token back a second


def test_a_revoked_key_is_refused_once_the_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key, other = add_key(open_store(path), "alice", 10, 20, []), add_key(open_store(path), "bob", 10, 20, [])
    ring = KeyRing(path)
    assert ring.admit(bearer(key), None) == "alice"
    revoke_key(open_store(path), "alice")
    assert ring.reload()
    with pytest.raises(Unauthorized):
        ring.admit(bearer(key), None)
    assert ring.admit(bearer(other), None) == "bob"


def test_a_key_file_that_breaks_keeps_the_keys_in_force(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = add_key(open_store(path), "alice", 10, 20, [])
    ring = KeyRing(path)
    good = json.loads(path.read_text())
    for broken in ({"rate": None}, {"models": 5}, {"burst": 0}, {"id": 7}):
        entries = {**good["keys"], "bob": {**good["keys"]["alice"], "id": "b0b", **broken}}
        with pytest.raises(ValueError, match="is not an API key file"):
            ring.load(parse(json.dumps({"keys": entries}).encode(), str(path)))
        assert ring.admit(bearer(key), None) == "alice"  # the keys read before, all of them


def test_a_proxy_watching_consul_needs_a_consul_url() -> None:
    from visionpool.proxy.settings import ProxySettings

    with pytest.raises(ValueError, match="consul_url must look like http://consul:8500"):
        ProxySettings(api_keys="consul:visionpool/api-keys", consul_url="consul:8500")  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_pool_with_keys(start_proxy, start_worker, tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    key = add_key(open_store(keys), "alice", rate=1000, burst=1000, models=[])
    proxy = start_proxy("--registry-token", "t", "--api-keys", str(keys))
    start_worker("--model", "sleepy", "--model-repository", str(write_sleepy_model(tmp_path / "models", 0.01)),
                 "--registry", "local", "--registry-url", proxy.url, "--registry-token", "t")  # fmt: skip
    url = proxy.url
    workers = {"Authorization": bearer(key)}
    wait_until(lambda: len(requests.get(url + "/workers", headers=workers, timeout=5).json()["workers"]) == 1)
    refused = requests.post(url + "/predict", data=IMAGE, headers={"Content-Type": "image/png"}, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert requests.get(url + "/healthz", timeout=5).status_code == 200  # health and metrics stay open
    for mode in ("proxy", "p2p"):  # p2p: the key goes to /lookup, never to the worker
        with Client(url, mode=mode, api_key=key) as client:
            assert client.predict(IMAGE).predictions[0].label in ("a", "b", "c")

    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:  # 20 MB announced, not sent
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 20000000\r\n\r\n"
        )
        started = time.monotonic()
        assert sock.recv(65536).startswith(b"HTTP/1.1 401")
        assert time.monotonic() - started < 2  # refused at once: the upload is never read

    revoke = [sys.executable, "-m", "visionpool.client", "keys", "revoke", "alice", "--file", str(keys)]
    assert subprocess.run(revoke, capture_output=True, text=True, timeout=60).returncode == 0
    revoked = time.monotonic()
    headers = {"Content-Type": "image/png", "Authorization": bearer(key)}
    wait_until(lambda: requests.post(url + "/predict", data=IMAGE, headers=headers, timeout=10).status_code == 401, 5)
    assert time.monotonic() - revoked < 1.5


@pytest.mark.slow
def test_p2p_workers_serve_only_whom_the_proxy_sent(start_proxy, start_worker, tmp_path: Path) -> None:
    pool = secured_pool(start_proxy, start_worker, tmp_path, "--worker-id", "w1")
    proxy, worker, key, auth, secret = pool.proxy, pool.worker, pool.key, pool.auth, pool.secret
    png = {"Content-Type": "image/png"}

    def straight(headers: dict[str, str]) -> requests.Response:
        return requests.post(worker.url + "/predict", data=IMAGE, headers={**png, **headers}, timeout=10)

    assert straight({}).status_code == 401  # around the proxy: refused
    assert straight(auth).status_code == 401  # an API key is not a ticket
    looked_up = requests.get(proxy.url + "/lookup", headers=auth, timeout=5).json()
    assert looked_up["worker_id"] == "w1" and looked_up["ticket_expires_in"] == 60
    assert straight({"Authorization": bearer(looked_up["ticket"])}).status_code == 200
    secret_bytes = secret.read_bytes().strip()
    expired = issue(secret_bytes, key="alice", model=None, worker="w1", ttl=-5, rate=10, burst=10)
    other = issue(secret_bytes, key="alice", model=None, worker="w2", ttl=60, rate=10, burst=10)
    assert straight({"Authorization": bearer(expired)}).status_code == 401
    assert straight({"Authorization": bearer(other)}).status_code == 403
    assert requests.get(worker.url + "/healthz", timeout=5).status_code == 200  # the rest of its API stays open
    for mode in ("p2p", "proxy"):  # the client renews tickets through /lookup; the proxy signs its own
        with Client(proxy.url, mode=mode, api_key=key) as client:
            assert [client.predict(IMAGE).predictions[0].label for _ in range(3)][0] in ("a", "b", "c")


@pytest.mark.slow
def test_tritonclient_with_a_key_through_the_proxy_and_a_ticket_over_grpc(
    start_proxy, start_worker, tmp_path: Path
) -> None:
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http
    from tritonclient.utils import InferenceServerException

    grpc_port = free_port()
    pool = secured_pool(start_proxy, start_worker, tmp_path, "--grpc-port", str(grpc_port))
    proxy, auth = pool.proxy, pool.auth
    image = np.array([IMAGE], dtype=np.object_)
    rest = triton_http.InferenceServerClient(proxy.url.removeprefix("http://"))
    inputs = [triton_http.InferInput("IMAGE", [1], "BYTES")]
    inputs[0].set_data_from_numpy(image)
    with pytest.raises(InferenceServerException, match="needs an API key"):
        rest.infer("sleepy", inputs)
    assert rest.infer("sleepy", inputs, headers=dict(auth)).as_numpy("COUNT").tolist() == [1]  # it adds to the dict
    ticket = requests.get(proxy.url + "/lookup?model=sleepy", headers=auth, timeout=5).json()["ticket"]
    direct = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    grpc_inputs = [triton_grpc.InferInput("IMAGE", [1], "BYTES")]
    grpc_inputs[0].set_data_from_numpy(image)
    with pytest.raises(InferenceServerException, match="ticket"):
        direct.infer("sleepy", grpc_inputs)
    answer = direct.infer("sleepy", grpc_inputs, headers={"authorization": bearer(ticket)})
    assert answer.as_numpy("COUNT").tolist() == [1]
