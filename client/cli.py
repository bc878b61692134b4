"""The client's commands: ``visionpool predict``, ``visionpool lookup`` and ``visionpool workers``.

Usage:
    visionpool predict PATH... [--url URL] [--p2p|--proxy] [--model NAME] [--out FILE] [--draw DIR] ...
    visionpool lookup [--url URL] [--model NAME]
    visionpool workers [--url URL]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionpool.serving.commands import command
from visionpool.serving.options import configure_logging, option


@dataclass
class PoolSettings:
    """What every command that talks to a pool takes."""

    url: str = option("http://127.0.0.1:8080", "The proxy's URL.", env="URL")
    model: str | None = option(None, "Model name (default: the workers' default model).", no_env=True)
    timeout: float = option(60.0, "Seconds to wait for one answer.", no_env=True)
    api_key: str | None = option(None, "The pool's API key, when it has keys (sent to the proxy alone).", secret=True)
    ca: str | None = option(None, "CA certificate to verify an https pool with (default: the system's CAs).",
                            metavar="FILE")  # fmt: skip
    cert: str | None = option(None, "Client certificate (PEM, with its key unless --cert-key), for a pool that asks "
                              "for one (--tls-client-ca).", metavar="FILE")  # fmt: skip
    cert_key: str | None = option(None, "The client certificate's private key (PEM).", metavar="FILE", secret=True)

    @property
    def client_cert(self) -> str | tuple[str, str] | None:
        """The certificate as requests takes it."""
        return (self.cert, self.cert_key) if self.cert and self.cert_key else self.cert

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError(f"timeout must be above 0 seconds, got {self.timeout}")
        if self.cert_key and not self.cert:
            raise ValueError("cert_key is the key of --cert: pass the certificate too (--cert FILE --cert-key FILE)")


@dataclass
class PredictSettings(PoolSettings):
    """``visionpool predict``: images through the pool."""

    paths: list[str] = option(
        default_factory=list, help="Image files, folders, or - for paths on stdin.", positional=True, nargs="+",
        metavar="PATH",
    )  # fmt: skip
    mode: str = option(
        "p2p", "Post straight to workers (p2p) or through the proxy.", choices=("p2p", "proxy"),
        shortcuts={"--p2p": "p2p", "--proxy": "proxy"}, no_env=True,
    )  # fmt: skip
    protocol: str = option(
        "predict", "Our /predict JSON, or the Open Inference Protocol (v2; needs --model).",
        choices=("predict", "v2"), no_env=True,
    )  # fmt: skip
    threshold: float | None = option(None, "Minimum score (0..1).", no_env=True)
    top_k: int | None = option(None, "At most this many predictions per image.", no_env=True)
    concurrency: int = option(8, "Images in flight at once.", no_env=True)
    retries: int = option(3, "Retries per image on retryable failures.", no_env=True)
    out: Path | None = option(
        None, "JSON lines file; a re-run skips what it holds.", kind=Path, metavar="FILE", no_env=True
    )
    draw: Path | None = option(None, "Write annotated copies into this folder.", kind=Path, metavar="DIR", no_env=True)
    quiet: bool = option(False, "No progress bar and no summary.", no_env=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.concurrency < 1 or self.retries < 0:
            raise ValueError("concurrency must be at least 1 and retries at least 0")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}")
        if self.protocol == "v2" and not self.model:
            raise ValueError("--protocol v2 names the model in the URL: pass --model")


def _predict(args: PredictSettings) -> int:
    from .batch import Journal, collect, run
    from .sync import Client

    configure_logging("WARNING")
    images = list(collect(args.paths, sys.stdin))
    client = Client(
        args.url,
        mode=args.mode,
        model=args.model,
        timeout=args.timeout,
        retries=args.retries,
        protocol=args.protocol,
        api_key=args.api_key,
        verify=args.ca or True,
        cert=args.client_cert,
    )
    journal = Journal(args.out)
    try:
        with client:
            summary = run(
                client,
                images,
                journal=journal,
                draw=args.draw,
                concurrency=args.concurrency,
                quiet=args.quiet,
                threshold=args.threshold,
                top_k=args.top_k,
            )
    finally:
        journal.close()
    if not args.quiet:
        print(summary.text(), file=sys.stderr)
    return 1 if summary.failures else 0


def _ask_proxy(name: str, args: PoolSettings, ask: Callable[[Any], Any]) -> int:
    """Print the proxy's JSON answer; exit 1 with the error when the pool refuses or cannot be reached."""
    from .errors import ClientError
    from .sync import Client

    try:
        with Client(args.url, retries=0, timeout=args.timeout, api_key=args.api_key, verify=args.ca or True,
                    cert=args.client_cert) as client:
            print(json.dumps(ask(client), indent=2))
    except ClientError as error:
        print(f"visionpool {name}: {error}", file=sys.stderr)
        return 1
    return 0


PREDICT = command(
    "predict",
    "run images through the pool",
    "Predict image files, folders (recursive) or paths read from stdin ('-').",
    PredictSettings,
    _predict,
)
LOOKUP = command(
    "lookup",
    "print the worker the proxy would hand out",
    "Print the worker the proxy would hand out.",
    PoolSettings,
    lambda args: _ask_proxy("lookup", args, lambda client: client.lookup(args.model)),
)
WORKERS = command(
    "workers",
    "list the proxy's healthy workers",
    "List the proxy's healthy workers.",
    PoolSettings,
    lambda args: _ask_proxy("workers", args, lambda client: {"workers": client.workers()}),
)
