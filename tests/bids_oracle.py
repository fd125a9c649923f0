"""A model provider for BIDS-App tests: networks that answer with the phantom ground truth of each image.

`phantom.write_bids_dataset` stores the truth of ``<rel>/<name>_<suffix>.nii.gz`` as
``derivatives/labels/<rel>/<name>_desc-spine_dseg.nii.gz``. The provider is picklable, so it also works in
the worker processes of ``--nprocs 2``.
"""

from __future__ import annotations

from pathlib import Path

from oracle import oracle_models

from totalspineseg import volume


def truth_path(bids_dir: Path, source: Path) -> Path:
    rel = Path(source).relative_to(bids_dir)
    stem = rel.name.split(".")[0].rsplit("_", 1)[0]
    return bids_dir / "derivatives" / "labels" / rel.parent / f"{stem}_desc-spine_dseg.nii.gz"


class TruthProvider:
    release = "oracle"

    def __init__(self, bids_dir, calls=None, tile_step: float = 0.5):
        self.bids_dir = Path(bids_dir)
        self.calls = calls  # a list that records every image segmented (in-process runs)
        self.tile_step = tile_step  # recorded in the fingerprint and the sidecars, as WeightsProvider's is

    def __call__(self, source):
        if self.calls is not None:
            self.calls.append(Path(source).relative_to(self.bids_dir).as_posix())
        truth = volume.load_labels(truth_path(self.bids_dir, Path(source)))
        return oracle_models(truth.data, truth.affine, self.tile_step)
