"""The network forward passes in OpenVINO on the CPU (optional: ``pip install 'totalspineseg[openvino]'``).

Only the forward pass changes: nnU-Net's preprocessing, sliding window, Gaussian weighting and export stay the same,
because the OpenVINO network is handed to nnU-Net's predictor in place of the torch module. The network is
converted from the loaded torch module once per checkpoint and patch size and kept as OpenVINO IR under
``$TOTALSPINESEG_OPENVINO_CACHE`` (default ``~/.cache/totalspineseg/openvino``), with OpenVINO's compiled-blob cache
beside it, so later runs skip the conversion and most of the compilation. When that folder cannot be written the
conversion is simply redone per process.

Measured on a ResEnc-L patch (2-core Intel Xeon with AMX, benchmarks/RESULTS.md "Backends"): f32 1.67x faster
than torch fp32; bf16 8.0x faster than torch fp32 and 4.3x faster than torch bf16.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InternalError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

BACKENDS = ("torch", "openvino")
#: torch stays the default: OpenVINO's f32 kernels sum in another order, and with the demo model that moved the
#: labels of 3 of 20 real scans past the agreement bars (benchmarks/RESULTS.md, "Backends"), where torch with 1 or
#: 2 threads gives identical labels.
DEFAULT_BACKEND = "torch"
BACKEND_HELP = ("library that runs the network forward passes: torch (default), or openvino (CPU only, "
                "--precision fp32 or bf16; in the containers and the lean install, else 'pip install "
                "totalspineseg[openvino]'): on the official network's patches 1.7x faster than torch in fp32 and, "
                "with --precision bf16 on a CPU with AMX, 8x; its fp32 labels differ slightly from torch's, so "
                "check them on your scans")
#: --precision -> OpenVINO's INFERENCE_PRECISION_HINT (it would pick bf16 by itself on an AMX CPU)
_HINTS = {"fp32": "f32", "bf16": "bf16"}


def available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def resolve_backend(requested: str, device_type: str, precision: str) -> str:
    """The backend a forward pass runs in, checked against the device and precision (UsageError if it cannot)."""
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {requested!r}")
    if requested == "openvino":
        if device_type != "cpu":
            raise UsageError("--backend openvino runs on the CPU only: use --device cpu, or --backend torch "
                             "on CUDA")
        if precision not in _HINTS:
            raise UsageError(f"--backend openvino supports --precision fp32 or bf16, not {precision}")
        if not available():
            raise UsageError("--backend openvino: OpenVINO is not installed (pip install "
                             "'totalspineseg[openvino]'), or use --backend torch")
    return requested


def cache_root() -> Path:
    if os.environ.get("TOTALSPINESEG_OPENVINO_CACHE"):
        return Path(os.environ["TOTALSPINESEG_OPENVINO_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "totalspineseg" / "openvino"


def network_key(checkpoint: Path, n_channels: int, patch: Sequence[int]) -> str:
    """Names one converted network: the checkpoint file (path, size, time), input shape and OpenVINO version."""
    import openvino as ov

    stat = checkpoint.stat()
    text = f"{checkpoint.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{n_channels}|{tuple(patch)}|{ov.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def compile_network(network: torch.nn.Module, n_channels: int, patch: Sequence[int], precision: str, threads: int,
                    key: str | None = None, cache: Path | None = None) -> torch.nn.Module:
    """`network` (torch, eval mode, on the CPU) compiled by OpenVINO for the CPU, as a torch module that nnU-Net's
    predictor can call on patch-sized tiles. `key` (see `network_key`): reuse the IR converted before."""
    import openvino as ov

    cache = cache_root() if cache is None else Path(cache)
    core = ov.Core()
    model_file = cache / key / "network.xml" if key else None
    if model_file is not None and model_file.is_file():
        model = core.read_model(str(model_file))
    else:
        model = _convert(network, n_channels, patch)
        if model_file is not None:
            _save(model, model_file)
    config = {"INFERENCE_PRECISION_HINT": _HINTS[precision], "INFERENCE_NUM_THREADS": int(threads)}
    if _writable(cache / "blobs"):
        config["CACHE_DIR"] = str(cache / "blobs")
    compiled = core.compile_model(model, "CPU", config)
    return _network_class()(compiled, (1, n_channels, *patch))


def _convert(network, n_channels: int, patch: Sequence[int]):
    import openvino as ov
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the traced shapes are the fixed tile shape
        return ov.convert_model(network.eval(), example_input=torch.zeros(1, n_channels, *patch))


def _save(model, model_file: Path) -> None:
    """The IR written next to its final place and moved there, so a reader never finds half a model."""
    import openvino as ov

    if not _writable(model_file.parent.parent):
        log.debug("OpenVINO cache %s is not writable: the network is converted again next time", model_file.parent)
        return
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=model_file.parent.parent))
    try:
        ov.save_model(model, str(tmp / model_file.name), compress_to_fp16=False)
        try:
            tmp.rename(model_file.parent)
        except OSError:  # another process got there first: its copy is as good
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


_NETWORK_CLASS = None


def _network_class():
    """`OpenVINONetwork`, defined on first use so that importing this module does not import torch."""
    global _NETWORK_CLASS
    if _NETWORK_CLASS is not None:
        return _NETWORK_CLASS
    import torch

    class OpenVINONetwork(torch.nn.Module):
        """A compiled OpenVINO network behind the torch module interface nnU-Net's predictor uses."""

        def __init__(self, compiled, input_shape: tuple[int, ...]):
            super().__init__()
            self._compiled = compiled
            self._request = compiled.create_infer_request()
            self.input_shape = tuple(int(s) for s in input_shape)

        def load_state_dict(self, *args, **kwargs):  # nnU-Net reloads the weights before each case: compiled in
            return None

        def forward(self, x):
            if tuple(x.shape) != self.input_shape:
                raise InternalError(f"OpenVINO network compiled for tiles of {self.input_shape}, "
                                    f"got {tuple(x.shape)}")
            result = self._request.infer({0: x.detach().to("cpu", torch.float32).contiguous().numpy()})
            return torch.from_numpy(result[self._compiled.output(0)].copy())

    _NETWORK_CLASS = OpenVINONetwork
    return OpenVINONetwork
