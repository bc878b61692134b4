"""The pool fixture these tests share with the others that drive a whole pool (tests/pools.py)."""

from __future__ import annotations

from pools import make_pool

__all__ = ["make_pool"]
