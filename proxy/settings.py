"""The proxy's settings: defaults here, then ``VISIONPOOL_*`` environment, then flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from visionpool.discovery.consul import split_url
from visionpool.serving.options import option
from visionpool.serving.settings import ServiceSettings, kv_key


@dataclass
class ProxySettings(ServiceSettings):
    """Everything a proxy process is told at start-up (the shared fields are ServiceSettings')."""

    ENV_SCOPE: ClassVar[str] = "PROXY_"  # VISIONPOOL_PROXY_HOST/PORT: honcho's $PORT and the workers' are not ours
    DEFAULT_PORT: ClassVar[int] = 8080

    connect_timeout: float = option(2.0, "Seconds to wait for a worker to accept a connection before trying another.")
    upstream_timeout: float = option(60.0, "Seconds a whole upstream call may take before the client gets 504.")
    retries: int = option(2, "Other workers tried after one fails (connection refused, died mid-request, 503).")
    eject_seconds: float = option(
        10.0, "Seconds a failing worker stays out of rotation (unless the registry drops it first)."
    )
    api_keys: Path | None = option(
        None,
        "API key file (visionpool keys add), or consul:KEY for a key of Consul's KV store: requests need "
        "Authorization: Bearer <key>; watched, so a revoked key stops working within a second. Unset: the pool is "
        "open.",
        kind=Path,
        metavar="FILE",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if kv_key(self.api_keys) is not None:  # a KV key is watched once serving, through this agent
            split_url(self.consul_url, "consul_url", "http://consul:8500")
        elif self.api_keys is not None:
            self.api_keys = Path(self.api_keys)
            if not self.api_keys.is_file():
                raise ValueError(f"api_keys: {self.api_keys} is not a file (make it with: visionpool keys add NAME "
                                 f"--file {self.api_keys})")  # fmt: skip
        if self.connect_timeout <= 0 or self.upstream_timeout <= 0:
            raise ValueError("connect_timeout and upstream_timeout must be above 0 seconds")
        if self.retries < 0 or self.eject_seconds < 0:
            raise ValueError("retries and eject_seconds must not be negative")
