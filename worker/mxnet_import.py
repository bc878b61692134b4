"""MXNet checkpoints (prefix-symbol.json + prefix-NNNN.params) to ONNX, with MXNet's own exporter.

Usage:
    onnx_path = convert_checkpoint(Path("ssd-symbol.json"), Path("models/.mxnet"))

MXNet 1.9.1 (the last release; the project is retired) runs on Python 3.11 only beside numpy<1.24 and
onnx<1.16, so it cannot share the worker's environment (numpy 2). The first conversion makes a virtual
environment of its own under the cache folder (``$VISIONPOOL_CACHE_DIR`` or ~/.cache/visionpool:
``mxnet-venv``, about 360 MB, ~20 s from PyPI) and later ones reuse it. The conversion runs there as a
child process; the worker never imports MXNet. The batch axis stays open in the ONNX file (OpenVINO
cannot compile MXNet's detectors with a fixed one).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from .settings import default_cache_dir

logger = logging.getLogger(__name__)
PACKAGES = ["mxnet==1.9.1", "numpy<1.24", "onnx<1.16"]
SIZES = (224, 256, 299, 300, 320, 416, 512, 32, 64, 96, 128)  # tried in turn when the symbol fixes none

EXPORT = r"""
import json, sys
import numpy as np
import mxnet as mx

prefix, epoch, target, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
sym, args, aux = mx.model.load_checkpoint(prefix, epoch)
inputs = [n for n in sym.list_inputs() if n not in args and n not in aux]
if len(inputs) != 1:
    sys.exit(f"the network takes {len(inputs)} inputs ({', '.join(inputs)}); visionpool serves one image input")
name = inputs[0]
first = next((v.shape for k, v in args.items() if v.ndim == 4), None)  # the first convolution's weights
channels = first[1] if first is not None else 3
sizes, fits = ([size] if size else SIZES), []
for height, width in sizes:
    try:
        sym.infer_shape(**{name: (1, channels, height, width)})
        fits.append((height, width))
        break
    except Exception:
        continue
if not fits:
    sys.exit(f"no input size fits the network (tried {sizes}): pass --size WxH")
height, width = fits[0]
mx.onnx.export_model(sym, {**args, **aux}, in_shapes=[(1, channels, height, width)], in_types=[np.float32],
                     onnx_file_path=target, dynamic=True, dynamic_input_shapes=[(None, channels, height, width)])
print(json.dumps({"input": name, "shape": [channels, height, width]}))
""".replace("SIZES", repr([(s, s) for s in SIZES]))


def convert_checkpoint(symbol: Path, work: Path, size: tuple[int, int] | None = None) -> Path:
    """The ONNX file made from ``prefix-symbol.json`` and its newest ``prefix-NNNN.params``, in ``work``."""
    prefix = symbol.with_name(symbol.name.removesuffix("-symbol.json"))
    epochs = sorted(int(p.stem.rsplit("-", 1)[1]) for p in symbol.parent.glob(f"{prefix.name}-*.params"))
    if not symbol.is_file() or not epochs:
        raise ValueError(f"{symbol}: an MXNet checkpoint is {prefix.name}-symbol.json beside {prefix.name}-NNNN.params")
    work.mkdir(parents=True, exist_ok=True)
    target = work / f"{prefix.name}.onnx"
    wanted = json.dumps([size[1], size[0]] if size else None)
    result = subprocess.run(
        [str(python()), "-c", EXPORT, str(prefix), str(epochs[-1]), str(target), wanted],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise ValueError(f"{symbol}: MXNet's exporter failed: {last}")
    said = json.loads(result.stdout.strip().splitlines()[-1])
    channels, height, width = said["shape"]
    how = "the --size flag" if size else ("the first size the network takes of " + ", ".join(f"{s}" for s in SIZES))
    print(f"converted {symbol.name} (epoch {epochs[-1]}) to ONNX: input {said['input']} [?, {channels}, {height}, "
          f"{width}] from {how}")  # fmt: skip
    return target


def python() -> Path:
    """The MXNet environment's Python, made on first use."""
    venv = Path(os.environ.get("VISIONPOOL_CACHE_DIR") or default_cache_dir()) / "mxnet-venv"
    executable = venv / "bin" / "python"
    if executable.is_file() and _works(executable):
        return executable
    print(f"making an MXNet environment in {venv} (once; {' '.join(PACKAGES)})", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
    installed = subprocess.run(
        [str(executable), "-m", "pip", "install", "-q", *PACKAGES], capture_output=True, text=True, timeout=1200
    )
    if installed.returncode != 0 or not _works(executable):
        raise ValueError(f"could not install {' '.join(PACKAGES)} in {venv}: {installed.stderr.strip()[-500:]}")
    return executable


def _works(executable: Path) -> bool:
    probe = subprocess.run([str(executable), "-c", "import mxnet.onnx"], capture_output=True, timeout=120)
    return probe.returncode == 0
