"""``visionpool keys``: the proxy's API keys, in a file (or a key of Consul's KV store) that holds only their hashes.

Usage:
    visionpool keys add NAME --file keys.json [--rate 10] [--burst 20] [--models m1,m2]   # prints the key once
    visionpool keys list --file keys.json
    visionpool keys revoke NAME --file keys.json
    visionpool keys add NAME --file consul:visionpool/api-keys --consul-url http://consul:8500 --consul-token T
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from visionpool.discovery import RegistryError
from visionpool.serving.commands import command
from visionpool.serving.options import option

from .keys import add_key, open_store, revoke_key


@dataclass
class KeysSettings:
    """What to do with which key, in which file."""

    action: str = option("list", "Add, list or revoke.", positional=True, choices=("add", "list", "revoke"))
    name: str | None = option(None, "The key's name (add, revoke).", positional=True, nargs="?")
    file: Path = option(Path("keys.json"), "The key file (the proxy's --api-keys), or consul:KEY for a key of "
                        "Consul's KV store.", kind=Path, metavar="FILE", env="API_KEYS")  # fmt: skip
    rate: float = option(10.0, "Requests a second the key may send, on average (add).", no_env=True)
    burst: float = option(20.0, "Requests the key may send at once (add).", no_env=True)
    models: str = option("", "The models the key may use, comma-separated; none: every model (add).", no_env=True)
    consul_url: str = option("http://127.0.0.1:8500", "Consul agent URL, for --file consul:KEY.")
    consul_token: str | None = option(None, "Consul ACL token (key:write on the key), for --file consul:KEY.",
                                      secret=True)  # fmt: skip


def run(settings: KeysSettings) -> int:
    try:
        return _run(settings)
    except RegistryError as error:  # Consul's KV store could not be read or written: one line, as for a file
        raise ValueError(str(error)) from None


def _run(settings: KeysSettings) -> int:
    if settings.action in ("add", "revoke") and not settings.name:
        raise ValueError(f"keys {settings.action} needs the key's name: visionpool keys {settings.action} NAME")
    store = open_store(settings.file, settings.consul_url, settings.consul_token)
    if settings.action == "add":
        models = [m.strip() for m in settings.models.split(",") if m.strip()]
        key = add_key(store, settings.name or "", settings.rate, settings.burst, models)
        print(key)
        print(f"(added {settings.name!r} to {settings.file}; this is the only time the key is shown)", flush=True)
    elif settings.action == "revoke":
        revoke_key(store, settings.name or "")
        print(f"revoked {settings.name!r} in {settings.file}: proxies watching it refuse it within a second")
    else:
        entries = store.read()
        listed = {name: {k: v for k, v in entry.items() if k != "sha256"} for name, entry in entries.items()}
        print(json.dumps(listed, indent=2))
    return 0


COMMAND = command(
    "keys",
    "add, list or revoke the proxy's API keys",
    "Add (printing the new key once), list or revoke API keys in a file, or a key of Consul's KV store, that holds "
    "only their hashes; the proxy reads it with --api-keys and watches it.",
    KeysSettings,
    run,
)
