"""The local registry's worker side against a real proxy's embedded registry."""

from __future__ import annotations

import pytest
import requests
from helpers import wait_until

from visionpool.discovery import Instance, RegistryError
from visionpool.discovery.local import LocalRegistry, load_or_create_token


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
