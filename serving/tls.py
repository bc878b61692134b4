"""TLS for every listener and every connection the pool makes, from the certificate files its settings name.

Usage:
    context = server_context(cert, key)            # the front door's (and gRPC's) listening side
    reload(context, cert, key)                     # SIGHUP: new handshakes get the new certificate; no
                                                   # connection is dropped
    context = client_context(ca, cert, key)        # the proxy to its workers (mTLS when cert is given),
                                                   # a worker to the registry
"""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """A listening context with ``cert``; with ``client_ca``, clients must present a certificate it signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def reload(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    """Load a renewed certificate into a context in use: handshakes from now on present it."""
    context.load_cert_chain(cert, key)


def client_context(ca: Path | None, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A context that verifies servers against ``ca`` (the system's CAs when None), presenting ``cert``."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None and key is not None:
        context.load_cert_chain(cert, key)
    return context
