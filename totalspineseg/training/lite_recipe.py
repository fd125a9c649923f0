"""The recipe of the bundled ``lite`` model: SynthSeg-style images on real spine anatomy, plus phantoms.

Stages, each skipped when its result is already there (so an interrupted run continues):

1. images: ``n_synth`` synthetic images (``synth.synthseg``: real bones from ``../shared/data/anatomy``, random
   contrast and acquisition) and ``n_phantoms`` geometric phantoms of the demo recipe (they keep the L6, the
   missing disc and the localizer cases), rendered into both nnU-Net raw datasets at 2 mm; then, with ``real``,
   the partly labelled real scans of one subject group (``real_cases``, ``real_copies`` copies each, nnU-Net's
   ignore label where their labels say nothing);
2. planning and preprocessing with the demo model's plans (the same network, so it can start from it);
3. training: each step starts from ``init`` (the bundled demo model for the first stage, the bundled lite model
   for later ones: the committed stripped weights) and runs ``epochs`` epochs; a finished stage is recorded;
4. export: stripped checkpoints, release zips, and (``bundle``) the model folders shipped in the package.

Every stage of the shipped model is listed in ``STAGES``; the model card says which ones it went through.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import labels as L
from .. import resample, training, volume
from ..synth import library as anatomy_library
from ..synth import synthseg
from ..training import NnUNetDirs, TrainSettings
from . import dataset, demo_recipe, real_cases

log = logging.getLogger(__name__)

RELEASE = "lite"
PLANS_NAME = "nnUNetPlansLite"
PLANS_OVERRIDE = demo_recipe.PLANS_OVERRIDE  # the demo network: it starts from the demo weights
SPACING = demo_recipe.SPACING
CASES_FILE = "lite_cases.json"
REAL_CASES_FILE = "lite_real_cases.json"
STAGE_FILE = "lite_stage.json"


@dataclass(frozen=True)
class LiteSettings:
    n_synth: int = 360
    n_phantoms: int = 80
    seed: int = 0  # synthetic images use seeds seed * 100000 + i; phantoms the demo recipe's draw with this seed
    epochs: tuple[int, int] = (36, 36)  # step 1, step 2
    iterations_per_epoch: int = 50
    val_iterations_per_epoch: int = 2
    processes: int = 2
    threads: int | None = None
    init: str | None = "demo"  # demo | lite | a model root folder | None (random)
    steps: tuple[int, ...] = (1, 2)
    synth_version: int = synthseg.SYNTH_VERSION  # what `synthseg.draw_spec` draws (1 = stage 1's images)
    precision: str = "auto"  # of the training forward pass: auto = bf16 on a CPU with native bf16 (see nnunet.train)
    real: str = "none"  # partly labelled real scans in the mix: none | A | B | all (real_cases.REAL_SCANS groups)
    real_copies: int = 6  # each real scan is written this many times: its share of the sampled patches
    real_test_only: bool = False  # experiments: also the test-only real scans (such a model is never bundled)

    @property
    def n_real(self) -> int:
        return len(self.real_scans()) * self.real_copies

    def real_scans(self) -> list[real_cases.RealScan]:
        return real_cases.scans_for(self.real, self.real_test_only)


#: The stages that made the shipped model, in order (each one a run of `train_lite` with these settings). The
#: first starts from its "init"; every later one ("init": "lite") from the weights the stage before it made.
#: `train_stages` runs them all.
STAGES = (
    # 2026-12-01, CPU (2 cores, the two steps side by side with one thread each, ~115 s an epoch); rendered with
    # anatomy library version 4.
    {"stage": 1, "init": "demo", "n_synth": 360, "n_phantoms": 80, "seed": 0, "epochs": [36, 36],
     "synth_version": 1, "precision": "fp32"},
    # 2026-12-01, CPU as above, ~60 s an epoch; anatomy library version 5, sacral remnants and texture.
    {"stage": 2, "init": "lite", "n_synth": 240, "n_phantoms": 40, "seed": 1, "epochs": [48, 48],
     "synth_version": 2, "precision": "fp32"},
    # 2026-12-01, the same images as stage 2 (same seed), 30 more epochs.
    {"stage": 3, "init": "lite", "n_synth": 240, "n_phantoms": 40, "seed": 1, "epochs": [30, 30],
     "synth_version": 2, "precision": "fp32"},
)


def _worker_init() -> None:
    global _LIBRARY
    _LIBRARY = anatomy_library.load_library()


_LIBRARY = None


def _write_synthetic(raw_dir: Path, index: int, spec: synthseg.SynthSpec) -> str:
    return _write(raw_dir, index, spec.name, synthseg.render_synthetic(_LIBRARY, spec))


def _write_phantom(raw_dir: Path, index: int, spec) -> str:
    return _write(raw_dir, index, spec.name, spec.render())


def _write(raw_dir: Path, index: int, spec_name: str, vol) -> str:
    """One rendered image into both raw datasets, on the network grid."""
    case = training.to_network_grid(volume.Volume(vol.image, vol.affine), volume.Volume(vol.labels, vol.affine),
                                    SPACING)
    name = f"lite{index:04d}_{spec_name}"
    training.write_case(raw_dir, (1, 2), name, case)
    return name


def build_datasets(dirs: NnUNetDirs, settings: LiteSettings, progress: bool = True) -> None:
    anatomy_library.load_library()  # build the cache once, before the workers read it
    synth = [synthseg.draw_spec(settings.seed * 100_000 + i, settings.synth_version) for i in range(settings.n_synth)]
    phantoms = [demo_recipe.draw_spec(settings.seed, i) for i in range(settings.n_phantoms)]
    for step in (1, 2):
        training.create_dataset(dirs.raw, step, overwrite=True)
    jobs = [(_write_synthetic, i, s) for i, s in enumerate(synth)]
    jobs += [(_write_phantom, len(synth) + i, s) for i, s in enumerate(phantoms)]
    with ProcessPoolExecutor(settings.processes, mp_context=get_context("spawn"), initializer=_worker_init) as pool:
        futures = [pool.submit(fn, dirs.raw, i, s) for fn, i, s in jobs]
        for f in tqdm(futures, total=len(futures), desc="Rendering training images", unit="image",
                      disable=not progress):
            f.result()
    for step in (1, 2):
        training.finish_dataset(dirs.raw, step)
    (dirs.raw / CASES_FILE).write_text(json.dumps({"synthetic": [asdict(s) for s in synth],
                                                   "phantoms": [asdict(s) for s in phantoms]}, indent=1))


def default_real_root() -> Path:
    return Path(os.environ.get("TOTALSPINESEG_REAL", Path(__file__).resolve().parents[3] / "shared" / "data" / "real"))


def add_real_cases(dirs: NnUNetDirs, settings: LiteSettings, root: Path | None = None, device: str = "auto",
                   progress: bool = True) -> list[str]:
    """Write the real scans of `settings.real` (``real_copies`` times each) into both raw datasets, and rewrite
    their dataset.json with the ignore label. Step 2 of a cord-only scan marks the discs the `settings.init` model
    finds in it (as at inference); a missing scan folder is an error, not a smaller training set."""
    root = Path(root) if root is not None else default_real_root()
    scans = settings.real_scans()
    missing = [s.image for s in scans if not (root / s.image).is_file() or not (root / s.truth).is_file()]
    if missing:
        raise training.TotalSpineSegError(f"{root}: real scans missing for --real {settings.real}: "
                                          + ", ".join(missing))
    models = _disc_predictor(settings.init, device, settings.threads)
    names = []
    for scan in tqdm(scans, desc="Real training scans", unit="scan", disable=not progress):
        partial = real_cases.load_partial_case(root, scan, SPACING)
        needs_prediction = models is not None and scan.kind == "cord"  # disc scans mark their manual discs
        predicted = _predicted_discs(models, root / scan.image, partial.case) if needs_prediction else None
        labels1 = real_cases.step1_labels(partial)
        copies2 = real_cases.step2_cases(partial, predicted)
        for copy in range(settings.real_copies):
            name = f"real_{scan.name}_{copy}"
            dataset.save_case(dirs.raw, 1, name, [partial.case.image], labels1, partial.case.affine)
            for suffix, channels, labels2, affine in copies2:
                dataset.save_case(dirs.raw, 2, name + suffix, channels, labels2, affine)
            names.append(name)
    for step in (1, 2):
        training.finish_dataset(dirs.raw, step, ignore_label=True)
    (dirs.raw / REAL_CASES_FILE).write_text(json.dumps({"real": settings.real, "copies": settings.real_copies,
                                                        "test_only_too": settings.real_test_only,
                                                        "scans": [asdict(s) for s in scans]}, indent=1))
    return names


def _disc_predictor(init: str | None, device: str, threads: int | None):
    if init is None:
        return None
    from ..pipeline import Models
    from ..weights import resolve_model

    return Models.load(resolve_model(init), device=device, threads=threads, step1_only=True, precision="fp32")


def _predicted_discs(models, image: Path, case: dataset.GridCase):
    """The numbered discs step 1 of `models` finds in `image`, on the case's grid."""
    from ..pipeline import PipelineOptions, segment

    result = segment(image, models, options=PipelineOptions(step1_only=True, soft_maps=False, levels=False,
                                                             native=False))
    seg = resample.resample_to_grid(result.iso.step1, result.iso.grid.affine, case.seg.shape, case.affine, "labels")
    return np.where(np.isin(seg, (*L.DISCS_POSSIBLE, L.DISC_UNNUMBERED)), seg, 0).astype(np.uint8)


def initial_checkpoint(init: str | None, step: int) -> Path | None:
    """The checkpoint a first stage starts from: a bundled release (demo, lite) or a model root folder."""
    if init is None:
        return None
    from ..weights import resolve_model

    return resolve_model(init).checkpoint(f"step{step}")


def train_lite(out_dir, settings: LiteSettings = LiteSettings(), device: str = "auto", bundle: Path | None = None,
               progress: bool = True) -> list[Path]:
    out_dir = Path(out_dir)
    if settings.real_test_only and bundle is not None and _inside_package(Path(bundle)):
        raise training.TotalSpineSegError(f"--bundle {bundle}: a model trained on test-only real scans "
                                          "(--real-test-only-scans) is never shipped in the package")
    dirs = NnUNetDirs(out_dir / "nnUNet")
    timings: dict[str, float] = {}
    n_cases = settings.n_synth + settings.n_phantoms + settings.n_real
    with demo_recipe._timed(timings, "images"):
        if not demo_recipe._raw_done(dirs, n_cases):
            if not demo_recipe._raw_done(dirs, settings.n_synth + settings.n_phantoms) \
                    or not (dirs.raw / CASES_FILE).is_file():
                build_datasets(dirs, settings, progress)
            if settings.n_real:
                add_real_cases(dirs, settings, device=device, progress=progress)
    for step in settings.steps:
        dataset_id = training.DATASET_IDS[step]
        with demo_recipe._timed(timings, f"plan_preprocess_{dataset_id}"):
            if not demo_recipe._preprocessed_done(dirs, dataset_id, PLANS_NAME):
                training.plan_and_preprocess(dirs, dataset_id, demo_recipe.PLANNER, PLANS_NAME,
                                             override=PLANS_OVERRIDE, processes=settings.processes)
            training.write_splits(dirs, dataset_id, demo_recipe.VALIDATION_FOLDS, overwrite=True)
        with demo_recipe._timed(timings, f"train_{dataset_id}"):
            fold = dirs.model_folder(dataset_id, PLANS_NAME) / "fold_0"
            total = settings.epochs[step - 1]
            if _stage_epochs(fold) < total:
                run = TrainSettings(total, settings.iterations_per_epoch, settings.val_iterations_per_epoch,
                                    settings.seed, continue_training=True, save_every=5,
                                    oversample_foreground=demo_recipe.OVERSAMPLE_FOREGROUND,
                                    initial_weights=initial_checkpoint(settings.init, step),
                                    precision=settings.precision)
                training.train(dirs, dataset_id, PLANS_NAME, device=device, settings=run, threads=settings.threads)
                (fold / STAGE_FILE).write_text(json.dumps({"epochs": total, "init": settings.init,
                                                           "precision": settings.precision, "real": settings.real}))
    zips: list[Path] = []
    if set(settings.steps) == {1, 2}:
        zips = training.export_release(dirs.results, out_dir / "exports", RELEASE)
        if bundle is not None:
            training.unpack_release(zips, Path(bundle))
    (out_dir / f"lite_timings_steps{''.join(map(str, settings.steps))}.json").write_text(json.dumps(timings, indent=2))
    for stage, seconds in timings.items():
        log.info("%-22s %7.1f s", stage, seconds)
    return zips


def stage_settings(stage: dict, init: str | None, processes: int = 2, threads: int | None = None) -> LiteSettings:
    return LiteSettings(n_synth=stage["n_synth"], n_phantoms=stage["n_phantoms"], seed=stage["seed"],
                        epochs=tuple(stage["epochs"]), init=init, synth_version=stage["synth_version"],
                        precision=stage.get("precision", "fp32"), real=stage.get("real", "none"),
                        real_copies=stage.get("real_copies", LiteSettings.real_copies), processes=processes,
                        threads=threads)


def train_stages(out_dir, bundle: Path | None = None, device: str = "auto", processes: int = 2,
                 threads: int | None = None, progress: bool = True) -> Path:
    """Every stage of `STAGES` in order, each in OUT_DIR/stage<N> (its models unpacked in OUT_DIR/stage<N>/model),
    each starting from the stage before; the shipped model from nothing but the anatomy sources. Stages already
    done are skipped, so an interrupted run continues. Returns the last stage's model folder."""
    out_dir = Path(out_dir)
    previous: Path | None = None
    zips: list[Path] = []
    for stage in STAGES:
        init = stage["init"] if previous is None else str(previous)
        work = out_dir / f"stage{stage['stage']}"
        log.info("lite stage %d of %d (init %s)", stage["stage"], len(STAGES), init)
        zips = train_lite(work, stage_settings(stage, init, processes, threads), device, bundle=work / "model",
                          progress=progress)
        previous = work / "model"
    if bundle is not None:
        training.unpack_release(zips, Path(bundle))
    return previous


def _inside_package(path: Path) -> bool:
    package = Path(__file__).resolve().parents[1]
    return path.resolve() == package or package in path.resolve().parents


def _stage_epochs(fold: Path) -> int:
    if (fold / STAGE_FILE).is_file():
        return int(json.loads((fold / STAGE_FILE).read_text())["epochs"])
    return 0
