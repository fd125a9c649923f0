"""One image in, one `SegmentationResult` out: the whole two-step flow, in memory.

    load + validate -> canonical RAS+ 1 mm grid -> step-1 network -> step-1 labeling
        -> soft cord/canal maps, disc-level points
        -> crop to the spine + odd-disc channel -> step-2 network -> step-2 labeling -> paste into the 1 mm grid
    -> back to the native grid (labels nearest, soft maps linear, level points kept as single voxels)

Nothing is written here; writers (the CLI, the BIDS-App) decide what goes to disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from . import labels as L
from . import resample, volume
from .errors import InputError, LabelingError
from .labeling import LabelingParams, LabelingResult, Localizer, label_step1, label_step2
from .postprocess import complete_discs, disc_level_points, mask_soft, odd_disc_mask
from .runtime import TILE_STEP_DEFAULT

if TYPE_CHECKING:
    from .predictor import Prediction
    from .weights import ModelPaths

log = logging.getLogger(__name__)

STAGES = ("load", "prepare", "step1_forward", "step1_labeling", "step2_forward", "step2_labeling",
          "resample_back")


@dataclass(frozen=True)
class PipelineOptions:
    step1_only: bool = False
    crop_margin: int = 10  # voxels (mm) around the step-1 segmentation for the step-2 crop
    soft_maps: bool = True
    levels: bool = True
    native: bool = True  # resample outputs back to the input grid (False with --iso)
    complete_discs: bool = True  # fill step-2 discs with step-1 disc voxels step 2 left empty (postprocess)
    labeling: LabelingParams = field(default_factory=LabelingParams)
    progress: bool = False


class Model(Protocol):
    """What the pipeline asks of a network: `predictor.LoadedModel`, or a stand-in in the tests."""

    device: Any  # a torch.device, or a device name

    def predict(self, image_channels: np.ndarray, spacing: Sequence[float] | None = None,
                return_probabilities: bool | Sequence[int] = False, progress: bool = False,
                affine: np.ndarray | None = None) -> Prediction: ...


@dataclass
class Models:
    """The two loaded networks plus provenance."""

    step1: Model
    step2: Model | None
    release: str = "custom"
    sha256: dict = field(default_factory=dict)
    device: str = "cpu"
    precision: str = "fp32"  # of the forward passes: fp32, bf16 or fp16
    tile_step: float = TILE_STEP_DEFAULT  # sliding-window step of both networks, a fraction of the patch
    backend: str = "torch"  # what runs the forward passes: torch or openvino

    @classmethod
    def load(cls, paths: ModelPaths, device: str = "auto", threads: int | None = None,
             step1_only: bool = False, precision: str = "auto", tile_step: float = TILE_STEP_DEFAULT,
             backend: str = "torch") -> Models:
        """Load the networks of a `weights.ModelPaths`."""
        from .predictor import load_model

        step1 = load_model(paths.step1, fold=paths.fold("step1"), checkpoint=paths.step1_checkpoint.name,
                           device=device, threads=threads, precision=precision, tile_step=tile_step, backend=backend)
        step2 = None
        if not step1_only:
            step2 = load_model(paths.step2, fold=paths.fold("step2"), checkpoint=paths.step2_checkpoint.name,
                               device=device, threads=threads, precision=precision, tile_step=tile_step,
                               backend=backend)
        return cls(step1, step2, paths.release, dict(paths.sha256), str(step1.device), step1.precision,
                   step1.tile_step, getattr(step1, "backend", "torch"))


@dataclass
class Grid:
    shape: tuple[int, int, int]
    affine: np.ndarray


@dataclass
class Outputs:
    """The deliverables on one grid (native or the 1 mm canonical one)."""

    grid: Grid
    step1: np.ndarray  # final scheme: numbered discs, C1, other vertebrae = 50, cord, canal
    step2: np.ndarray | None  # final scheme, everything numbered
    cord: np.ndarray | None  # float32 soft cord
    canal: np.ndarray | None  # float32 soft canal (cord included)
    levels: np.ndarray | None  # uint8 single voxels


@dataclass
class SegmentationResult:
    source: str
    native: Outputs | None  # None with options.native = False
    iso: Outputs  # the 1 mm canonical grid
    iso_image: np.ndarray  # the network input, on iso.grid
    step1_raw: np.ndarray  # network classes on iso.grid
    step2_raw: np.ndarray | None  # network classes on the cropped grid
    step2_input: np.ndarray | None  # odd-disc channel on the cropped grid
    crop_grid: Grid | None
    step1_labeling: LabelingResult
    step2_labeling: LabelingResult | None
    level_points_iso: dict[int, tuple[int, int, int]]
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    release: str = ""
    device: str = ""
    precision: str = "fp32"
    tile_step: float = TILE_STEP_DEFAULT
    backend: str = "torch"
    header: Any = None  # the input's NIfTI header: outputs on its grid keep its qform/sform

    @property
    def final(self) -> Outputs:
        return self.native if self.native is not None else self.iso

    def level_table(self) -> list[dict]:
        """One row per level point: value, name, voxel index on the output grid, world coordinate (mm)."""
        out = self.final
        rows = []
        if out.levels is None:
            return rows
        for v in sorted(int(x) for x in np.unique(out.levels) if x):
            vox = np.argwhere(out.levels == v)[0]
            world = out.grid.affine[:3, :3] @ vox + out.grid.affine[:3, 3]
            rows.append({"level": v, "name": L.LEVEL_NAMES.get(v, str(v)), "voxel": [int(c) for c in vox],
                         "world_mm": [round(float(c), 2) for c in world]})
        return rows


class _Timer:
    def __init__(self):
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0


LocalizerSource = str | Path | volume.Volume | Localizer | None


def as_localizer(loc: LocalizerSource) -> Localizer | None:
    """A localizer segmentation given as a path, a `volume.Volume` or a `Localizer`."""
    if loc is None or isinstance(loc, Localizer):
        return loc
    if not isinstance(loc, volume.Volume):
        loc = volume.load_labels(loc)
    unknown = np.setdiff1d(np.unique(loc.data), [0, *L.FINAL])
    if unknown.size:
        shown = ", ".join(str(int(v)) for v in unknown[:6]) + (", ..." if unknown.size > 6 else "")
        raise InputError(loc.path or "<localizer>",
                         f"not a segmentation of this tool: values {shown} are not labels (give the localizer's "
                         "step2_output or step1_output file, not its image)")
    return Localizer(loc.data, loc.affine)


def segment(image: str | Path | volume.Volume, models: Models, localizer: LocalizerSource = None,
            options: PipelineOptions = PipelineOptions()) -> SegmentationResult:
    """Run the whole pipeline on one image (a path or a `volume.Volume`)."""
    timer = _Timer()
    with timer.stage("load"):
        vol = image if isinstance(image, volume.Volume) else volume.load_volume(image)
        source = str(vol.path) if vol.path is not None else "<array>"
        volume.check_plausible(vol)
        loc = as_localizer(localizer)
    with timer.stage("prepare"):
        iso_image, iso_affine = volume.to_iso(vol)
        iso_grid = Grid(tuple(iso_image.shape), iso_affine)

    with timer.stage("step1_forward"):
        wanted = [int(L.Step1.CANAL), int(L.Step1.CORD)] if options.soft_maps else False
        pred1 = models.step1.predict(iso_image[None], return_probabilities=wanted, progress=options.progress,
                                       affine=iso_affine)
    with timer.stage("step1_labeling"):
        res1 = label_step1(pred1.labels, iso_affine, loc, options.labeling)
        if not res1.seg.any():
            raise LabelingError(f"{source}: step 1 found no spine (empty segmentation); is this a spine MRI?")
        cord = canal = levels = None
        points: dict[int, tuple[int, int, int]] = {}
        if options.soft_maps:
            probs = pred1.probabilities
            canal = mask_soft(probs[int(L.Step1.CANAL)], res1.seg, (L.CORD, L.CANAL), 1)
            cord = mask_soft(probs[int(L.Step1.CORD)], res1.seg, (L.CORD,), 1)
        step1_raw = pred1.labels
        del pred1
        warnings = [f"step 1: {w}" for w in res1.warnings]
        if options.levels:
            try:
                levels, points = disc_level_points(res1.seg)
            except ValueError as exc:
                warnings.append(f"levels: {exc}")

    step2_iso = step2_raw = odd = None
    res2 = None
    crop_grid = None
    if not options.step1_only:
        with timer.stage("step2_forward"):
            cropped, crop_affine, slices = resample.crop_to_mask(iso_image, res1.seg, iso_affine, options.crop_margin)
            crop_grid = Grid(tuple(cropped.shape), crop_affine)
            odd = odd_disc_mask(res1.seg[slices])
            channels = np.stack([cropped, odd.astype(np.float32)])
            del cropped
            step2_raw = models.step2.predict(channels, progress=options.progress, affine=crop_affine).labels
            del channels
        with timer.stage("step2_labeling"):
            res2 = label_step2(step2_raw, crop_affine, loc, options.labeling, step1=Localizer(res1.seg, iso_affine))
            seg2 = complete_discs(res2.seg, res1.seg[slices]) if options.complete_discs else res2.seg
            step2_iso = resample.paste(seg2, slices, iso_grid.shape)
            warnings += [f"step 2: {w}" for w in res2.warnings]

    iso_out = Outputs(iso_grid, res1.seg, step2_iso, cord, canal, levels)
    native = None
    if options.native:
        with timer.stage("resample_back"):
            native = _to_native(iso_out, vol)
    for w in warnings:
        log.warning("%s: %s", source, w)
    return SegmentationResult(
        source=source, native=native, iso=iso_out, iso_image=iso_image, step1_raw=step1_raw, step2_raw=step2_raw,
        step2_input=odd, crop_grid=crop_grid, step1_labeling=res1, step2_labeling=res2, level_points_iso=points,
        warnings=[f"header: {w}" for w in vol.warnings] + warnings, timings=timer.timings,
        release=models.release, device=models.device, precision=models.precision,
        tile_step=models.tile_step, backend=models.backend, header=vol.header,
    )


def _to_native(iso: Outputs, vol: volume.Volume) -> Outputs:
    shape, affine = tuple(vol.shape[:3]), vol.affine

    def back(arr, kind):
        return None if arr is None else resample.resample_to_grid(arr, iso.grid.affine, shape, affine, kind)

    return Outputs(Grid(shape, affine), back(iso.step1, "labels"), back(iso.step2, "labels"),
                   back(iso.cord, "soft"), back(iso.canal, "soft"), back(iso.levels, "points"))
