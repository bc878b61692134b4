"""What every registry backend is: workers announce themselves (Registry), proxies follow who is healthy (Directory)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

SERVICE = "visionpool-worker"  # the service name workers register under


class RegistryError(Exception):
    """The registry could not be reached or refused a request."""


@dataclass(frozen=True)
class Instance:
    """One worker as the registry knows it."""

    id: str  # unique per worker process, e.g. "gpu-host-1:5000"
    url: str  # where clients reach it: http://host:port
    models: dict[str, str] = field(default_factory=dict, hash=False)  # model name -> version served
    grpc: str = ""  # host:port of its Open Inference Protocol gRPC service, if it has one

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "models": dict(self.models), "grpc": self.grpc}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Instance:
        models = {str(k): str(v) for k, v in dict(data["models"]).items()}
        return cls(str(data["id"]), str(data["url"]), models, str(data.get("grpc") or ""))


class Registry(ABC):
    """The worker's side of a registry: announce, keep alive, withdraw."""

    renew_interval: float = 0.0  # seconds between renew() calls a worker must make; 0 = none

    @abstractmethod
    def register(self, instance: Instance) -> None:
        """Announce a ready worker; RegistryError if that fails."""

    def renew(self, instance: Instance) -> None:  # noqa: B027 - registries that check health themselves need none
        """Keep a registration alive; RegistryError if that fails."""

    @abstractmethod
    def deregister(self, instance: Instance) -> None:
        """Withdraw a worker; RegistryError if that fails."""


class Directory(ABC):
    """The proxy's side of a registry: who is healthy now."""

    @abstractmethod
    def watch(self) -> AsyncIterator[list[Instance]]:
        """Yield the healthy instances now, then again each time they change; never ends by itself."""

    def routes(self) -> list[Any]:
        """aiohttp routes the proxy serves for this registry (the embedded registry's API); errors as ServiceError."""
        return []
