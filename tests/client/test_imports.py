"""The client ships alone: importing it loads none of the services, their frameworks or the engines."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # a fresh interpreter, so that nothing imported by other tests counts

SERVICE_MODULES = ("visionpool.worker", "visionpool.proxy", "visionpool.discovery", "flask", "openvino",
                   "onnxruntime", "cv2", "prometheus_client", "grpc", "tritonclient", "consul", "uvloop")  # fmt: skip


def test_the_client_imports_no_service() -> None:
    probe = "import sys, visionpool.client; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    modules = loaded.stdout.split()
    assert [m for m in modules if m.split(".")[0] in SERVICE_MODULES or m.startswith(SERVICE_MODULES)] == []
    assert "visionpool.client.sync" in modules and "requests" in modules
