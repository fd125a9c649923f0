"""A raw BIDS dataset of phantoms, with the exact ground truth as a derivative dataset.

Each participant is one seeded person; each session draws a contrast and an acquisition (field of view,
orientation, voxel sizes, a small tilt), and optionally a whole-spine localizer in the same scanner space.
The BIDS version and the label look-up table are the BIDS-App's own, so the two datasets always agree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import __version__
from ..bids_app.derivatives import BIDS_VERSION, dseg_lut, write_json
from ..fsutil import atomic_write
from .anatomy import build_anatomy
from .grid import fov_box, localizer_grid, make_grid
from .render import CONTRASTS, render

__all__ = ["write_bids_dataset"]

# Acquisitions the BIDS writer draws from: (field of view, orientation, voxel sizes).
_BIDS_ACQUISITIONS = (
    ("whole", "PIR", (1.5, 1.5, 4.0)),
    ("whole", "ASL", (1.5, 1.5, 3.5)),
    ("cervical", "RAS", (1.3, 1.3, 1.3)),
    ("cervical", "PIL", (0.9, 0.9, 3.0)),
    ("cervicothoracic", "ASR", (1.0, 1.0, 3.5)),
    ("thoracic", "LPS", (1.0, 1.0, 3.0)),
    ("thoracolumbar", "PSR", (1.1, 1.1, 3.5)),
    ("lumbar", "LAS", (1.0, 1.0, 4.0)),
    ("lumbar", "RPI", (1.5, 1.5, 1.5)),
)
_LOCALIZED_FOVS = ("thoracic", "lumbar", "cervical")


def write_bids_dataset(outdir, participants: int, seed: int, sessions: int = 0, localizer: bool = False) -> Path:
    """A raw BIDS dataset of phantoms, with the ground truth under derivatives/labels."""
    if participants < 1:
        raise ValueError(f"--participants must be at least 1, got {participants}")
    if sessions < 0:
        raise ValueError(f"--sessions must be zero or more, got {sessions}")
    root = Path(outdir)
    deriv = root / "derivatives" / "labels"
    rows = []
    for p in range(1, participants + 1):
        person = seed * 1000 + p
        rng = np.random.default_rng([seed, p])
        rows.append((f"sub-{p:02d}", int(rng.integers(20, 80)), str(rng.choice(["F", "M"])), person))
        for ses in range(1, sessions + 1) if sessions else [None]:
            _write_session(root, deriv, p, ses, person, rng, localizer)
    _write_bids_metadata(root, deriv, rows)
    return root


def _write_session(root, deriv, p, ses, person, rng, localizer) -> None:
    entities = f"sub-{p:02d}" + (f"_ses-{ses:02d}" if ses else "")
    rel = Path(f"sub-{p:02d}") / (f"ses-{ses:02d}" if ses else "") / "anat"
    anat = build_anatomy(person)
    contrast = str(rng.choice(CONTRASTS))
    if localizer:
        fov = str(rng.choice(_LOCALIZED_FOVS))
        choices = [a for a in _BIDS_ACQUISITIONS if a[0] == fov]
        _, orientation, voxel = choices[int(rng.integers(len(choices)))]
    else:
        fov, orientation, voxel = _BIDS_ACQUISITIONS[int(rng.integers(len(_BIDS_ACQUISITIONS)))]
    oblique = float(rng.uniform(-6, 6))
    main = render(anat, *make_grid(fov_box(anat, fov), orientation, voxel, oblique), contrast, [person, 3, ses or 0])
    main.save(root / rel / f"{entities}_{contrast}.nii.gz", deriv / rel / f"{entities}_desc-spine_dseg.nii.gz")
    if localizer:
        loc = render(anat, *localizer_grid(anat), "T2w", [person, 4, ses or 0])
        name = f"{entities}_acq-localizer"
        loc.save(root / rel / f"{name}_T2w.nii.gz", deriv / rel / f"{name}_desc-spine_dseg.nii.gz")


def _write_bids_metadata(root: Path, deriv: Path, rows) -> None:
    generated = [{"Name": "totalspineseg-phantom", "Version": __version__}]
    raw = {
        "Name": "TotalSpineSeg synthetic spine phantoms",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["totalspineseg-phantom"],
        "GeneratedBy": generated,
    }
    labels = {
        "Name": "Ground-truth spine labels of the phantoms",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "License": "CC0",
        "GeneratedBy": generated,
    }
    write_json(root / "dataset_description.json", raw)
    write_json(deriv / "dataset_description.json", labels)
    tsv = "participant_id\tage\tsex\tphantom_seed\n" + "".join(f"{r[0]}\t{r[1]}\t{r[2]}\t{r[3]}\n" for r in rows)
    atomic_write(root / "participants.tsv", tsv)
    columns = {
        "age": {"Description": "Age of the (synthetic) participant", "Units": "year"},
        "sex": {"Description": "Sex of the (synthetic) participant", "Levels": {"F": "female", "M": "male"}},
        "phantom_seed": {"Description": "Seed of build_anatomy(); the same seed gives the same spine"},
    }
    write_json(root / "participants.json", columns)
    atomic_write(root / "README", _README)
    atomic_write(deriv / "desc-spine_dseg.tsv", dseg_lut())


_README = """\
Synthetic spine MRI phantoms written by totalspineseg-phantom.

Each participant is a seeded synthetic spine (vertebrae with posterior arches, discs, C1 ring, sacrum,
spinal canal and cord) rendered with T1w- or T2w-like contrast, a bias field and Rician noise, in various
fields of view, orientations and voxel sizes. Images marked acq-localizer are low-resolution whole-spine
views in the same scanner space as the participant's main image.

The exact ground truth, in the TotalSpineSeg final label scheme, is under derivatives/labels
(desc-spine_dseg). These images are synthetic and contain no human data.
"""
