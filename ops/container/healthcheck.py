#!/usr/bin/env python3
"""Usage: visionpool-healthcheck  (the image's HEALTHCHECK)

Exit 0 when the service in this container answers GET /readyz with 200: a worker whose models are
loaded and warmed up, or a proxy that knows a worker. It asks the ports the services take from the
environment (VISIONPOOL_PORT, 8000; VISIONPOOL_PROXY_PORT, 8080), on loopback.
"""

import os
import sys
import urllib.request


def ready(port: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


ports = (os.environ.get("VISIONPOOL_PORT", "8000"), os.environ.get("VISIONPOOL_PROXY_PORT", "8080"))
sys.exit(0 if any(ready(port) for port in ports) else 1)
