"""Where the networks of a run come from.

A provider is a small picklable object (it crosses into worker processes) with a `release` name, used in
the completion fingerprint, and a call `provider(source_path) -> pipeline.Models`. The default one resolves
the weights when it is built, so that missing weights stop the run before any work, and loads the networks
once per process on first use. Tests pass their own provider (networks that answer with the ground truth).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from .. import weights
from ..pipeline import Models


@runtime_checkable
class ModelProvider(Protocol):
    """What a run needs to get its networks: a release name and `provider(source) -> Models`."""

    release: str

    def __call__(self, source: Path) -> Models: ...


class WeightsProvider:
    def __init__(self, name: str, device: str = "auto", threads: int | None = None, step1_only: bool = False,
                 data_dir: str | Path | None = None):
        self.paths = weights.resolve_model(name, data_dir)  # raises WeightsError with the install command
        self.release = self.paths.release
        self.device, self.threads, self.step1_only = device, threads, step1_only
        self._models: Models | None = None

    def __call__(self, source: Path) -> Models:
        if self._models is None:
            self._models = Models.load(self.paths, self.device, self.threads, self.step1_only)
        return self._models

    def __getstate__(self):
        return {**self.__dict__, "_models": None}  # each process loads its own copy


class FixedProvider:
    """The same, already loaded, Models for every image (in-process runs only)."""

    def __init__(self, models: Models):
        self.models = models
        self.release = models.release

    def __call__(self, source: Path) -> Models:
        return self.models


ModelSource = Models | ModelProvider


def as_provider(models: ModelSource) -> ModelProvider:
    return FixedProvider(models) if isinstance(models, Models) else models
