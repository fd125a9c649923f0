"""Where the networks of a run come from.

A provider is a small picklable object (it crosses into worker processes) with a `release` name, used in
the completion fingerprint, and a call `provider(source_path) -> pipeline.Models`. The default one resolves
the weights when it is built, so that missing weights stop the run before any work, and loads the networks
once per process on first use; networks that do not load fail every image of that process with the same
one-line `WeightsError`, without a new attempt per image. Tests pass their own provider (networks that answer
with the ground truth).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from .. import weights
from ..console import describe_exception
from ..errors import TotalSpineSegError, WeightsError
from ..openvino_backend import resolve_backend
from ..pipeline import Models
from ..runtime import TILE_STEP_DEFAULT, check_tile_step, resolve_precision


@runtime_checkable
class ModelProvider(Protocol):
    """What a run needs to get its networks: a release name and `provider(source) -> Models`."""

    release: str
    precision: str  # of the forward passes, as resolved (part of the completion fingerprint)
    tile_step: float  # sliding-window step, a fraction of the patch (part of the completion fingerprint)

    def __call__(self, source: Path) -> Models: ...


class WeightsProvider:
    def __init__(self, name: str, device: str = "auto", threads: int | None = None, step1_only: bool = False,
                 data_dir: str | Path | None = None, precision: str = "auto",
                 tile_step: float = TILE_STEP_DEFAULT, backend: str = "torch"):
        self.paths = weights.resolve_model(name, data_dir)  # raises WeightsError with the install command
        self.release = self.paths.release
        self.precision = resolve_precision(precision, _device_type(device))
        self.backend = resolve_backend(backend, _device_type(device), self.precision)  # refused before any image
        self.tile_step = check_tile_step(tile_step)
        self.device, self.threads, self.step1_only = device, threads, step1_only
        self._models: Models | None = None
        self._failure: TotalSpineSegError | None = None

    def __call__(self, source: Path) -> Models:
        if self._failure is not None:
            raise self._failure.with_traceback(None)
        if self._models is None:
            try:
                self._models = Models.load(self.paths, self.device, self.threads, self.step1_only, self.precision,
                                           self.tile_step, self.backend)
            except TotalSpineSegError as exc:
                self._failure = exc
                raise
            except Exception as exc:  # noqa: BLE001 - torch and nnU-Net raise anything on a damaged checkpoint
                self._failure = WeightsError(f"{self.paths.root}: the networks of {self.release} do not load "
                                             f"({describe_exception(exc)})")
                raise self._failure from exc
        return self._models

    def __getstate__(self):
        return {**self.__dict__, "_models": None, "_failure": None}  # each process loads its own copy


class FixedProvider:
    """The same, already loaded, Models for every image (in-process runs only)."""

    def __init__(self, models: Models):
        self.models = models
        self.release = models.release
        self.precision = models.precision
        self.tile_step = models.tile_step

    def __call__(self, source: Path) -> Models:
        return self.models


ModelSource = Models | ModelProvider


def as_provider(models: ModelSource) -> ModelProvider:
    return FixedProvider(models) if isinstance(models, Models) else models


def _device_type(device: str) -> str:
    """"cpu" or "cuda", as `predictor.resolve_device` will settle it (torch is imported only for "auto")."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if device.startswith("cuda") else "cpu"
