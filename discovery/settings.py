"""Settings that workers and proxies share (same flags, same environment variables): registry, logging."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def default_token_file() -> Path:
    """Where the embedded registry keeps its token on this machine (readable by this user only)."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "visionpool" / "registry-token"


def check_logging(level: str, fmt: str) -> None:
    """Validate the logging settings every service has."""
    if level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    if fmt not in ("plain", "json"):
        raise ValueError(f"log_format must be 'plain' or 'json', got {fmt!r}")


@dataclass
class RegistrySettings:
    """How to reach the service registry."""

    # Registry: 'local' (embedded in the proxy) or 'consul' (workers also take 'none').
    registry: str = "local"
    # Shared secret for the local registry; when unset, read from registry_token_file.
    registry_token: str | None = field(default=None, metadata={"secret": True})
    # File holding the local registry's token; the proxy creates it (mode 600) when missing.
    registry_token_file: Path = field(default_factory=default_token_file, metadata={"type": Path, "metavar": "FILE"})
    # Seconds a local registration lives without renewal (workers renew every third of it).
    registry_ttl: float = 10.0
    # Consul agent URL, for --registry consul.
    consul_url: str = "http://127.0.0.1:8500"
    # Consul ACL token, for --registry consul.
    consul_token: str | None = field(default=None, metadata={"secret": True})

    def check_registry(self, choices: tuple[str, ...]) -> None:
        """Validate the registry fields; ValueError says what to pass instead."""
        self.registry_token_file = Path(self.registry_token_file)
        if self.registry not in choices:
            raise ValueError(f"registry must be one of {', '.join(choices)}, got {self.registry!r}")
        if self.registry_ttl < 0.5:
            raise ValueError(f"registry_ttl must be at least 0.5 seconds, got {self.registry_ttl}")

    def consul_options(self) -> dict[str, Any]:
        """Keyword arguments for ConsulRegistry."""
        return {"url": self.consul_url, "token": self.consul_token}
