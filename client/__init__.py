"""The Python client of a visionpool pool, and the ``visionpool`` command line.

Usage:
    from visionpool.client import Client
    with Client("http://127.0.0.1:8080") as client:
        result = client.predict("cat.jpg")
        print(result.predictions[0].label, result.predictions[0].box)
"""

from __future__ import annotations

from .aio import AsyncClient
from .errors import (
    BadImage,
    BadRequest,
    ClientError,
    ConnectionFailed,
    ModelNotFound,
    ServerError,
    Timeout,
    TooLarge,
    Unavailable,
    UnsupportedImage,
)
from .sync import Client
from .types import Box, Mask, Prediction, Result

__all__ = [
    "AsyncClient",
    "BadImage",
    "BadRequest",
    "Box",
    "Mask",
    "Client",
    "ClientError",
    "ConnectionFailed",
    "ModelNotFound",
    "Prediction",
    "Result",
    "ServerError",
    "Timeout",
    "TooLarge",
    "Unavailable",
    "UnsupportedImage",
]
