"""Seedable synthetic spine phantoms with exact ground truth in the final label scheme: the public entry points.

A phantom is one `PhantomSpec`: a person (the seed, with an optional extra lumbar vertebra or a missing disc),
a field of view and an acquisition (orientation, voxel sizes, contrast, a small oblique tilt). The work is
done by the modules next to this one:

shapes    spine coordinates (Centreline, Frame) and the shape primitives, with their tissues
anatomy   one seeded person's spine as an ordered list of shapes to paint
grid      fields of view and voxel grids (orientation code, anisotropic voxels, tilt)
render    labels and an MR-like image on a grid
bids      a raw BIDS dataset of phantoms with its ground-truth derivative

Callers import this module only: everything they use is defined or re-exported here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .anatomy import Anatomy, build_anatomy, check_missing_disc
from .bids import write_bids_dataset
from .grid import FOVS, check_fov, check_oblique, check_orientation, check_voxel, fov_box, localizer_grid, make_grid
from .render import CONTRASTS, Volume3D, check_contrast, render
from .shapes import Tissue

__all__ = [
    "FOVS",
    "CONTRASTS",
    "Tissue",
    "Volume3D",
    "PhantomSpec",
    "Anatomy",
    "build_anatomy",
    "fov_box",
    "make_grid",
    "render",
    "make_phantom",
    "make_localizer",
    "write_phantom",
    "write_bids_dataset",
    "check_orientation",
    "check_missing_disc",
]


@dataclass(frozen=True)
class PhantomSpec:
    """Everything that defines one phantom image; the same spec always gives the same arrays.

    Checked on creation (ValueError with a one-line message); `orientation` is stored upper-case and
    `voxel` as a tuple of floats, neither of which changes the rendering.
    """

    seed: int = 0
    fov: str = "whole"
    orientation: str = "RAS"
    voxel: tuple[float, float, float] = (1.0, 1.0, 1.0)
    contrast: str = "T2w"
    extra_lumbar: bool = False
    missing_disc: int | None = None
    oblique_deg: float = 0.0

    def __post_init__(self) -> None:
        check_fov(self.fov)
        object.__setattr__(self, "orientation", check_orientation(self.orientation))
        object.__setattr__(self, "voxel", tuple(float(v) for v in check_voxel(self.voxel)))
        check_contrast(self.contrast)
        check_missing_disc(self.missing_disc, self.extra_lumbar)
        check_oblique(self.oblique_deg)

    @classmethod
    def of(cls, *args, **kwargs) -> PhantomSpec:
        """A spec from a spec (with fields replaced by `kwargs`), or from the fields themselves, in field order."""
        if args and isinstance(args[0], PhantomSpec):
            if len(args) > 1:
                raise TypeError("a PhantomSpec takes no further positional arguments")
            return dataclasses.replace(args[0], **kwargs) if kwargs else args[0]
        return cls(*args, **kwargs)


def make_phantom(*args, **kwargs) -> Volume3D:
    """A phantom image and its exact labels for one field of view of person `seed`.

    Takes a `PhantomSpec`, or its fields: ``make_phantom(3, "lumbar", voxel=(1, 1, 3), contrast="T1w")``.
    """
    spec = PhantomSpec.of(*args, **kwargs)
    anat = build_anatomy(spec.seed, spec.extra_lumbar, spec.missing_disc)
    shape, affine = make_grid(fov_box(anat, spec.fov), spec.orientation, spec.voxel, spec.oblique_deg)
    noise_seed = [spec.seed, 1, FOVS.index(spec.fov), CONTRASTS.index(spec.contrast)]
    return render(anat, shape, affine, spec.contrast, noise_seed)


def make_localizer(seed: int = 0, extra_lumbar=False, missing_disc=None, contrast="T2w") -> Volume3D:
    """A low-resolution sagittal whole-spine view of the same person in the same world space."""
    anat = build_anatomy(seed, extra_lumbar, missing_disc)
    return render(anat, *localizer_grid(anat), contrast, [seed, 2, CONTRASTS.index(contrast)])


def write_phantom(outdir, *args, localizer: bool = False, **kwargs) -> dict[str, Path]:
    """Write image.nii.gz and labels.nii.gz (and, with `localizer`, the localizer pair) into `outdir`.

    The phantom is a `PhantomSpec` or its fields, as for `make_phantom`.
    """
    spec = PhantomSpec.of(*args, **kwargs)
    outdir = Path(outdir)
    pair = make_phantom(spec).save(outdir / "image.nii.gz", outdir / "labels.nii.gz")
    paths = dict(zip(("image", "labels"), pair, strict=True))
    if localizer:
        loc = make_localizer(spec.seed, spec.extra_lumbar, spec.missing_disc)
        pair = loc.save(outdir / "localizer.nii.gz", outdir / "localizer_labels.nii.gz")
        paths |= dict(zip(("localizer", "localizer_labels"), pair, strict=True))
    return paths
