"""Fixtures for the registry backends: a Consul agent double and a watch runner."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from visionpool.discovery import Registry

if TYPE_CHECKING:
    from consul_double import ConsulDouble, Watcher


def _sibling(name: str) -> ModuleType:
    """Import tests/discovery/<name>.py by path: with --import-mode=importlib this folder is not on sys.path."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


consul_double = _sibling("consul_double")


@pytest.fixture
def make_consul() -> Iterator[Callable[..., ConsulDouble]]:
    """Start Consul agent doubles (ConsulDouble's keyword arguments) on free ports; all closed after the test."""
    started: list[ConsulDouble] = []

    def make(**options: Any) -> ConsulDouble:
        double: ConsulDouble = consul_double.ConsulDouble(**options)
        started.append(double)
        double.start()
        return double

    yield make
    for double in started:
        double.close()


@pytest.fixture
def consul(make_consul: Callable[..., ConsulDouble]) -> ConsulDouble:
    """A running Consul agent double without ACLs whose checks pass as soon as a service registers."""
    return make_consul()


@pytest.fixture
def watch() -> Iterator[Callable[[Registry], Watcher]]:
    """Run ``registry.watch()`` in background threads; every one is stopped after the test."""
    started: list[Watcher] = []

    def start(registry: Registry) -> Watcher:
        watcher: Watcher = consul_double.Watcher(registry)
        started.append(watcher)
        return watcher

    yield start
    for watcher in started:
        watcher.stop()
