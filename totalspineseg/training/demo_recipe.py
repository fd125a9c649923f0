"""The recipe of the bundled demo model: synthetic phantoms, both datasets, small plans, training, release zips.

Every stage writes under one output folder and is skipped when its result is already there, so an interrupted run
continues where it stopped. The phantoms use person seeds below ``HELD_OUT_SEED_BASE``; evaluations use seeds from
there on, which training never sees.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import labels as L
from .. import training, volume
from ..synth import phantom
from ..training import NnUNetDirs, TrainSettings

log = logging.getLogger(__name__)

RELEASE = "demo"
PLANS_NAME = "nnUNetPlansDemo"
PLANNER = "default"  # plain convolutions: a third of the cost of a residual encoder of the same width on a CPU
SPACING = 2.0  # mm; the phantoms are rendered straight onto this grid, so nnU-Net has nothing to resample
HELD_OUT_SEED_BASE = 10_000
# Patch in nnU-Net axis order (SI, AP, LR for a RAS image): 256 x 96 x 64 mm. The long SI side gives the context
# that tells landmark discs apart; AP and LR are kept short because training time grows with the patch volume.
PLANS_OVERRIDE = {"features_per_stage": [8, 16, 32, 64, 128], "n_conv_per_stage": 1, "n_conv_per_stage_decoder": 1,
                  "patch_size": [128, 48, 32], "batch_size": 2}
# Every patch centred on a structure drawn evenly from the regions: the rare ones (C1, the landmark discs) are what
# the labeling needs most and what a short training learns last.
OVERSAMPLE_FOREGROUND = 1.0
VALIDATION_FOLDS = 20  # fold 0 keeps 1 case in 20 for nnU-Net's pseudo-Dice printout

_FOV_WEIGHTS = {"whole": 0.25, "cervical": 0.15, "cervicothoracic": 0.15, "thoracic": 0.1, "thoracolumbar": 0.15,
                "lumbar": 0.2}
_ORIENTATIONS = tuple("".join(p[i][s] for i, s in zip(order, signs, strict=False))
                      for p in [("LR", "PA", "IS")]
                      for order in itertools.permutations(range(3))
                      for signs in itertools.product((0, 1), repeat=3))


@dataclass(frozen=True)
class PhantomSpec(phantom.PhantomSpec):
    """One training or evaluation image: a phantom, or the whole-spine localizer of the same person."""

    localizer: bool = False  # a low-resolution whole-spine localizer of the same person instead

    @property
    def name(self) -> str:
        what = "localizer" if self.localizer else self.fov
        return f"phantom{self.seed:05d}_{what}_{self.orientation}_{self.contrast}"

    def render(self) -> phantom.Volume3D:
        if self.localizer:
            return phantom.make_localizer(self.seed, self.extra_lumbar, self.missing_disc, self.contrast)
        return phantom.make_phantom(self)


def draw_spec(seed: int, index: int) -> PhantomSpec:
    """Training image `index` of the recipe with seed `seed`: every field of view, orientation and voxel shape."""
    rng = np.random.default_rng([seed, index])
    person = int(rng.integers(0, HELD_OUT_SEED_BASE))
    contrast = str(rng.choice(phantom.CONTRASTS))
    extra_lumbar = bool(rng.random() < 0.1)
    if rng.random() < 0.08:
        return PhantomSpec(person, contrast=contrast, extra_lumbar=extra_lumbar, localizer=True)
    fov = str(rng.choice(list(_FOV_WEIGHTS), p=list(_FOV_WEIGHTS.values())))
    orientation = _ORIENTATIONS[int(rng.integers(len(_ORIENTATIONS)))]
    in_plane = round(float(rng.uniform(0.8, 1.5)), 2)
    thick = in_plane if rng.random() < 0.35 else round(float(rng.uniform(2.0, 4.5)), 2)
    oblique = round(float(rng.uniform(-6, 6)), 1) if rng.random() < 0.5 else 0.0
    return PhantomSpec(person, fov, orientation, (in_plane, in_plane, thick), contrast, extra_lumbar,
                       oblique_deg=oblique)


def _write_phantom(raw_dir: Path, index: int, spec: PhantomSpec) -> str:
    ph = spec.render()
    case = training.to_network_grid(volume.Volume(ph.image, ph.affine), volume.Volume(ph.labels, ph.affine), SPACING)
    name = f"demo{index:04d}_{spec.name}"
    training.write_case(raw_dir, (1, 2), name, case)
    return name


def build_datasets(dirs: NnUNetDirs, n_cases: int, seed: int, processes: int = 2, progress: bool = True) -> None:
    """Render the training phantoms straight into both nnU-Net raw datasets (in `processes` worker processes)."""
    specs = [draw_spec(seed, i) for i in range(n_cases)]
    for step in (1, 2):
        training.create_dataset(dirs.raw, step, overwrite=True)
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        jobs = pool.map(_write_phantom, itertools.repeat(dirs.raw), range(len(specs)), specs, chunksize=4)
        for _ in tqdm(jobs, total=len(specs), desc="Rendering phantoms", unit="case", disable=not progress):
            pass
    for step in (1, 2):
        training.finish_dataset(dirs.raw, step)
    (dirs.raw / "demo_cases.json").write_text(json.dumps([asdict(s) for s in specs], indent=1))


@dataclass(frozen=True)
class DemoSettings:
    n_cases: int = 240
    seed: int = 0
    epochs: tuple[int, int] = (75, 60)  # step 1, step 2
    # Warm restarts after `epochs`: training goes on for `restart_epochs` more epochs, `restarts` times, the
    # learning rate rising again each time and decaying over the new total. The landmark discs (step 1) and the
    # thin discs (step 2) are still improving when a single schedule of this length ends.
    restart_epochs: tuple[int, int] = (35, 40)
    restarts: tuple[int, int] = (2, 2)
    iterations_per_epoch: int = 50
    val_iterations_per_epoch: int = 2
    processes: int = 2
    threads: int | None = None  # CPU training threads; None = all allowed CPUs
    precision: str = "fp32"  # of the training forward pass; the shipped demo model was trained in fp32

    def stages(self, step: int) -> tuple[int, ...]:
        """Cumulative epoch totals of the training stages of step 1 or 2."""
        first, extra, n = self.epochs[step - 1], self.restart_epochs[step - 1], self.restarts[step - 1]
        return (first,) + tuple(first + extra * k for k in range(1, n + 1) if extra > 0)


def train_demo(out_dir, settings: DemoSettings = DemoSettings(), device: str = "auto", bundle: Path | None = None,
               progress: bool = True) -> list[Path]:
    """Run the whole recipe into `out_dir`; returns the release zips (and unpacks them into `bundle` if given)."""
    out_dir = Path(out_dir)
    dirs = NnUNetDirs(out_dir / "nnUNet")
    timings: dict[str, float] = {}
    with _timed(timings, "phantoms"):
        if not _raw_done(dirs, settings.n_cases):
            build_datasets(dirs, settings.n_cases, settings.seed, settings.processes, progress)
    for step in (1, 2):
        dataset_id = training.DATASET_IDS[step]
        with _timed(timings, f"plan_preprocess_{dataset_id}"):
            if not _preprocessed_done(dirs, dataset_id):
                training.plan_and_preprocess(dirs, dataset_id, PLANNER, PLANS_NAME, override=PLANS_OVERRIDE,
                                             processes=settings.processes)
            training.write_splits(dirs, dataset_id, VALIDATION_FOLDS, overwrite=True)
        with _timed(timings, f"train_{dataset_id}"):
            fold = dirs.model_folder(dataset_id, PLANS_NAME) / "fold_0"
            for total in settings.stages(step):
                if _epochs_done(fold, settings.epochs[step - 1]) >= total:
                    continue
                run = TrainSettings(total, settings.iterations_per_epoch, settings.val_iterations_per_epoch,
                                    settings.seed, continue_training=True, save_every=5,
                                    oversample_foreground=OVERSAMPLE_FOREGROUND, precision=settings.precision)
                training.train(dirs, dataset_id, PLANS_NAME, device=device, settings=run, threads=settings.threads)
                (fold / STAGE_FILE).write_text(json.dumps({"epochs": total}))
    zips = training.export_release(dirs.results, out_dir / "exports", RELEASE)
    if bundle is not None:
        training.unpack_release(zips, Path(bundle))
    (out_dir / "demo_timings.json").write_text(json.dumps(timings, indent=2))
    for stage, seconds in timings.items():
        log.info("%-22s %7.1f s", stage, seconds)
    return zips


STAGE_FILE = "demo_stage.json"


def _epochs_done(fold: Path, first_stage: int) -> int:
    """Epochs of the last finished training stage in `fold` (0 when none finished)."""
    if (fold / STAGE_FILE).is_file():
        return int(json.loads((fold / STAGE_FILE).read_text())["epochs"])
    # nnU-Net writes checkpoint_final only at the end of a run: without a stage record it is the first stage.
    return first_stage if (fold / "checkpoint_final.pth").is_file() else 0


class _timed:
    def __init__(self, timings: dict, name: str):
        self.timings, self.name = timings, name

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.timings[self.name] = round(time.perf_counter() - self.start, 1)


def _raw_done(dirs: NnUNetDirs, n_cases: int) -> bool:
    for step, factor in ((1, 1), (2, 2)):
        path = dirs.raw / training.DATASET_NAMES[training.DATASET_IDS[step]] / "dataset.json"
        if not path.is_file() or json.loads(path.read_text())["numTraining"] != factor * n_cases:
            return False
    return True


def _preprocessed_done(dirs: NnUNetDirs, dataset_id: int, plans_name: str = PLANS_NAME) -> bool:
    folder = dirs.preprocessed / training.DATASET_NAMES[dataset_id]
    plans = folder / f"{plans_name}.json"
    if not plans.is_file():
        return False
    identifier = json.loads(plans.read_text())["configurations"][training.CONFIGURATION]["data_identifier"]
    n_raw = len(list((dirs.raw / training.DATASET_NAMES[dataset_id] / "labelsTr").glob("*.nii.gz")))
    return (folder / identifier).is_dir() and len(list((folder / identifier).glob("*.pkl"))) == n_raw


# --------------------------------------------------------------------------------------------------
# Held-out evaluation

#: Twelve held-out phantoms: every field of view, three orientations, both contrasts, one with an L6.
HELD_OUT = (
    PhantomSpec(HELD_OUT_SEED_BASE + 1, "whole", "RAS", (1.0, 1.0, 1.0), "T2w"),
    PhantomSpec(HELD_OUT_SEED_BASE + 2, "whole", "PSR", (1.2, 1.2, 3.5), "T1w"),
    PhantomSpec(HELD_OUT_SEED_BASE + 3, "cervical", "LPS", (1.3, 1.3, 1.3), "T1w"),
    PhantomSpec(HELD_OUT_SEED_BASE + 4, "cervical", "PSR", (0.9, 0.9, 3.0), "T2w"),
    PhantomSpec(HELD_OUT_SEED_BASE + 5, "cervicothoracic", "RAS", (1.0, 1.0, 3.5), "T2w"),
    PhantomSpec(HELD_OUT_SEED_BASE + 6, "cervicothoracic", "PSR", (1.0, 1.0, 1.0), "T1w"),
    PhantomSpec(HELD_OUT_SEED_BASE + 7, "thoracic", "LPS", (1.0, 1.0, 3.0), "T2w"),
    PhantomSpec(HELD_OUT_SEED_BASE + 8, "thoracic", "PSR", (0.9, 0.9, 3.5), "T1w"),
    PhantomSpec(HELD_OUT_SEED_BASE + 9, "thoracolumbar", "PSR", (1.1, 1.1, 3.5), "T2w"),
    PhantomSpec(HELD_OUT_SEED_BASE + 10, "thoracolumbar", "RAS", (1.2, 1.2, 1.2), "T1w"),
    PhantomSpec(HELD_OUT_SEED_BASE + 11, "lumbar", "LPS", (1.0, 1.0, 4.0), "T2w"),
    PhantomSpec(HELD_OUT_SEED_BASE + 12, "lumbar", "RAS", (1.5, 1.5, 1.5), "T1w", extra_lumbar=True),
)
#: Fields of view with no landmark disc in view: they are numbered through a localizer, as upstream advises.
NEEDS_LOCALIZER = ("thoracic",)


@dataclass
class CaseScore:
    spec: PhantomSpec
    structures: list[int]  # true discs, vertebrae and sacrum in view
    not_identified: list[int]
    dice: dict[int, float]  # every true label; 0 where the run failed
    seconds: float
    used_localizer: bool
    error: str | None = None

    @property
    def identification_rate(self) -> float:
        return 1.0 - len(self.not_identified) / len(self.structures) if self.structures else 1.0

    @property
    def mean_dice(self) -> float:
        return float(np.mean(list(self.dice.values()))) if self.dice else 0.0


def evaluate(spec: PhantomSpec, models, options=None) -> CaseScore:
    """Run the real pipeline on one phantom (its localizer first where needed) and score the final labels.

    A run that fails counts as nothing identified and a Dice of 0 for every label.
    """
    from ..errors import TotalSpineSegError
    from ..pipeline import PipelineOptions, segment
    from . import metrics

    options = options or PipelineOptions(progress=False)
    ph = spec.render()
    truth = metrics.present_labels(ph.labels)
    structures = [v for v in truth if L.FINAL[v].kind in ("disc", "vertebra", "sacrum")]
    start = time.perf_counter()
    localizer = None
    try:
        if spec.fov in NEEDS_LOCALIZER:
            loc = phantom.make_localizer(spec.seed, spec.extra_lumbar, spec.missing_disc, contrast="T2w")
            loc_result = segment(volume.Volume(loc.image, loc.affine), models, None, options)
            localizer = volume.Volume(loc_result.final.step2, loc.affine)
        pred = segment(volume.Volume(ph.image, ph.affine), models, localizer, options).final.step2
    except TotalSpineSegError as exc:
        return CaseScore(spec, structures, structures, dict.fromkeys(truth, 0.0), time.perf_counter() - start,
                         localizer is not None, str(exc))
    seconds = time.perf_counter() - start
    _, failures = metrics.identification_rate(pred, ph.labels)
    return CaseScore(spec, structures, failures, metrics.dice_per_label(pred, ph.labels, truth), seconds,
                     localizer is not None)


def summarize(scores: list[CaseScore]) -> dict:
    """Overall numbers: structures identified over all cases, and the mean Dice over every (case, label) pair."""
    n_structures = sum(len(s.structures) for s in scores)
    n_identified = n_structures - sum(len(s.not_identified) for s in scores)
    all_dice = [d for s in scores for d in s.dice.values()]
    return {
        "cases": len(scores),
        "errors": sum(s.error is not None for s in scores),
        "identified": n_identified,
        "structures": n_structures,
        "identification_rate": n_identified / n_structures if n_structures else 1.0,
        "mean_dice": float(np.mean(all_dice)) if all_dice else 0.0,
    }
