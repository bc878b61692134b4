"""The proxy app's shared state, by typed key: what its handlers reach through ``request.app[KEY]``."""

from __future__ import annotations

from aiohttp import web

from visionpool.discovery import Directory
from visionpool.serving.frontdoor import FrontDoor

from .forward import Forwarder
from .keys import KeyRing
from .metrics import ProxyMetrics
from .pool import Pool
from .settings import ProxySettings
from .view import PoolView

SETTINGS = web.AppKey("settings", ProxySettings)
POOL = web.AppKey("pool", Pool)
REGISTRY = web.AppKey("registry", Directory)
FORWARDER = web.AppKey("forwarder", Forwarder)
METRICS = web.AppKey("metrics", ProxyMetrics)
DOOR = web.AppKey("front_door", FrontDoor)
VIEW = web.AppKey("pool_view", PoolView)
KEYS = web.AppKey("api_keys", KeyRing)  # only when the pool has keys
SECRET = web.AppKey("pool_secret", bytes)  # only with --pool-secret-file: tickets are signed
