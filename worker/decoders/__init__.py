"""Output decoders by name. A new output format is one small module and one line here."""

from __future__ import annotations

from typing import Any

from .base import Decoder, Prediction
from .softmax import SoftmaxDecoder
from .ssd import SSDDecoder

DECODERS: dict[str, type[Decoder]] = {
    "ssd": SSDDecoder,
    "softmax": SoftmaxDecoder,
}

__all__ = ["DECODERS", "Decoder", "Prediction", "create_decoder"]


def create_decoder(name: str, options: dict[str, Any]) -> Decoder:
    """The decoder called ``name``; ValueError names the valid choices."""
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(sorted(DECODERS))}")
    return DECODERS[name](options)
