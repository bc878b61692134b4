"""Service discovery: where workers announce themselves and proxies find them.

Usage:
    registry = create_registry(settings, "worker")    # what a worker registers with
    registry = create_registry(settings, "proxy")     # what a proxy follows (and serves, for 'local')
"""

from __future__ import annotations

from typing import Literal, overload

from visionpool.serving.settings import ServiceSettings

from .base import SERVICE, Directory, Instance, Registry, RegistryError

ROLES = ("worker", "proxy")

__all__ = [
    "ROLES",
    "SERVICE",
    "Directory",
    "Instance",
    "Registry",
    "RegistryError",
    "ServiceSettings",
    "create_registry",
]


@overload
def create_registry(settings: ServiceSettings, role: Literal["worker"]) -> Registry: ...
@overload
def create_registry(settings: ServiceSettings, role: Literal["proxy"]) -> Directory: ...


def create_registry(settings: ServiceSettings, role: str) -> Registry | Directory:
    """The registry ``settings`` name, for a worker or a proxy; ValueError names the valid choices."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if settings.registry == "local":
        from .local import EmbeddedRegistry, LocalRegistry, load_or_create_token

        if role == "proxy":
            token = settings.registry_token or load_or_create_token(settings.registry_token_file)
            return EmbeddedRegistry(token, settings.registry_ttl)
        return LocalRegistry(
            settings.registry_url,
            settings.registry_token,
            settings.registry_token_file,
            settings.registry_ttl,
            ca=settings.tls_ca,
            cert=(settings.tls_cert, settings.tls_key) if settings.tls_cert and settings.tls_key else None,
        )
    if settings.registry == "consul":
        from .consul import ConsulRegistry

        return ConsulRegistry(url=settings.consul_url, token=settings.consul_token)
    raise ValueError(f"unknown registry {settings.registry!r}; choose one of local, consul")
