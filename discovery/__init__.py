"""Service discovery: where workers announce themselves and proxies find them.

Usage:
    registry = create_registry("consul", url="http://consul:8500", token="...")
"""

from __future__ import annotations

from typing import Any

from .base import SERVICE, Instance, Registry, RegistryError

REGISTRIES = ("local", "consul")

__all__ = ["REGISTRIES", "SERVICE", "Instance", "Registry", "RegistryError", "create_registry"]


def create_registry(name: str, **options: Any) -> Registry:
    """The registry backend called ``name``; ValueError names the valid choices."""
    if name == "local":
        from .local import LocalRegistry

        return LocalRegistry(**options)
    if name == "consul":
        from .consul import ConsulRegistry

        return ConsulRegistry(**options)
    raise ValueError(f"unknown registry {name!r}; choose one of {', '.join(REGISTRIES)}")
