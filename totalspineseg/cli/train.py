"""`totalspineseg-train`: prepare nnU-Net datasets, train the two models, export release zips, build the demo model."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .. import training
from ..console import ArgumentParser, add_logging_options, run_command
from ..errors import UsageError
from ..training.nnunet import TRAIN_PRECISIONS

PROG = "totalspineseg-train"
DESCRIPTION = ("Train TotalSpineSeg models: prepare the two nnU-Net datasets from labelled BIDS data, plan and train "
               "them with nnU-Net, export release zips, or build the demo model from synthetic phantoms.")
log = logging.getLogger("totalspineseg")
TRAIN_PRECISION_HELP = ("of the training forward pass on the CPU: auto = bf16 where the CPU computes it natively (AMX "
                        "or AVX512-BF16; 1.6-1.8x faster training steps of the lite network), fp32 elsewhere; "
                        "weights and optimizer stay fp32. On CUDA nnU-Net's fp16 autocast is used whatever is asked")

EPILOG = f"""\
a full training, as upstream lays it out under $TOTALSPINESEG_DATA/nnUNet:
  {PROG} prepare bids/ data/nnUNet/raw
  {PROG} run data/nnUNet --dataset 101
  {PROG} run data/nnUNet --dataset 102
  {PROG} export data/nnUNet/results exports/ --release mymodel
  totalspineseg-weights install --from exports/ --release mymodel --data-dir weights/
  totalspineseg image.nii.gz out/ --weights weights/nnUNet/results/mymodel

the bundled demo model (synthetic phantoms only), from scratch:
  {PROG} demo work/demo --seed 0
"""


def get_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG)
    add_logging_options(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_prepare(sub)
    _add_run(sub)
    _add_export(sub)
    _add_demo(sub)
    _add_lite(sub)
    return p


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="BIDS dataset with labels -> Dataset101/Dataset102 in nnU-Net raw format",
                       description="Write the step-1 and step-2 nnU-Net raw datasets of a labelled BIDS dataset: "
                                   "canonical images on a 1 mm grid, labels in the models' classes, step 2 cropped "
                                   "to the spine with the odd-disc channel and each case duplicated with the "
                                   "odd/even parity swapped. Unusable pairs are reported and skipped.")
    p.add_argument("bids_dir", type=Path, help="BIDS dataset holding the images and the label derivatives")
    p.add_argument("raw_dir", type=Path, help="nnU-Net raw folder to write Dataset101_*/Dataset102_* into")
    p.add_argument("--steps", type=int, nargs="+", choices=[1, 2], default=[1, 2], help="datasets to write")
    p.add_argument("--labels-pattern", default=training.DEFAULT_LABELS_PATTERN, metavar="GLOB",
                   help="label files, relative to BIDS_DIR; a [segment/] part is optional (default: %(default)s)")
    p.add_argument("--spacing", type=float, default=1.0, metavar="MM", help="grid spacing (default 1 mm, as upstream)")
    p.add_argument("--overwrite", action="store_true", help="replace existing dataset folders")


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="plan, preprocess and train one dataset with nnU-Net",
                       description="nnU-Net fingerprint, experiment planning, preprocessing and training of one "
                                   "fold with the trainer class nnUNetTrainer (mirroring off). NNUNET_DIR holds "
                                   "raw/, preprocessed/ and results/.")
    p.add_argument("nnunet_dir", type=Path, help="folder with raw/ (from prepare); preprocessed/ and results/ go here")
    p.add_argument("--dataset", type=int, choices=sorted(training.DATASET_NAMES), required=True)
    p.add_argument("--planner", choices=sorted(training.PLANNERS), default="ResEncL",
                   help="nnU-Net experiment planner (default ResEncL, as upstream)")
    p.add_argument("--plans", default="nnUNetPlans", help="plans name (default nnUNetPlans, as upstream)")
    p.add_argument("--configuration", default=training.CONFIGURATION)
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--epochs", type=int, help="default: nnU-Net's 1000")
    p.add_argument("--iterations-per-epoch", type=int, help="default: nnU-Net's 250")
    p.add_argument("--val-iterations", type=int, help="validation iterations per epoch (default: nnU-Net's 50)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, help="CPU threads for training (default: all allowed CPUs)")
    p.add_argument("--processes", type=int, default=2, help="worker processes for planning and preprocessing")
    shrink = p.add_mutually_exclusive_group()
    shrink.add_argument("--tiny-plans", action="store_true",
                        help=f"shrink the network for a smoke test: {json.dumps(training.TINY_OVERRIDE)}")
    shrink.add_argument("--plans-override", metavar="JSON",
                        help="JSON object (or a .json file) with features_per_stage, n_conv_per_stage, "
                             "n_conv_per_stage_decoder, patch_size, batch_size and/or spacing")
    p.add_argument("--skip-planning", action="store_true", help="reuse the existing plans and preprocessed data")
    p.add_argument("--continue-training", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--precision", choices=TRAIN_PRECISIONS, default="auto",
                   help=TRAIN_PRECISION_HELP + " (default auto)")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write release zips (no optimizer state) and their sha256",
                       description="Write <Dataset>_<release>.zip and .sha256 for each trained dataset in an "
                                   "nnU-Net results folder; install them with totalspineseg-weights install --from.")
    p.add_argument("results_dir", type=Path, help="nnU-Net results folder (with Dataset101_*/Dataset102_*)")
    p.add_argument("out_dir", type=Path, help="folder for the zips")
    p.add_argument("--release", default="custom", help="release name in the zip names (default custom)")
    p.add_argument("--checkpoint", choices=["final", "best"], default="final")
    p.add_argument("--fold", default="0")
    p.add_argument("--model", metavar="TRAINER__PLANS__CONFIG", help="which model folder, if there are several")


def _add_demo(sub) -> None:
    from ..training import demo_recipe

    d = demo_recipe.DemoSettings()
    p = sub.add_parser("demo", help="build the demo model from synthetic phantoms, end to end",
                       description="Render phantoms, prepare both datasets, plan small networks, train both steps "
                                   "and export release zips into OUT_DIR/exports. Stages already done in OUT_DIR "
                                   "are skipped. The result is for demonstrations only, not for real scans.")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--cases", type=int, default=d.n_cases, help="number of phantoms (default %(default)s)")
    p.add_argument("--epochs", type=int, nargs=2, default=list(d.epochs), metavar=("STEP1", "STEP2"),
                   help="epochs of the first training stage (default: %(default)s)")
    p.add_argument("--restart-epochs", type=int, nargs=2, default=list(d.restart_epochs), metavar=("STEP1", "STEP2"),
                   help="epochs of each warm restart after the first stage, 0 for none (default: %(default)s)")
    p.add_argument("--restarts", type=int, nargs=2, default=list(d.restarts), metavar=("STEP1", "STEP2"),
                   help="number of warm restarts (default: %(default)s)")
    p.add_argument("--iterations-per-epoch", type=int, default=d.iterations_per_epoch)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--processes", type=int, default=d.processes, help="worker processes for data preparation")
    p.add_argument("--precision", choices=TRAIN_PRECISIONS, default=d.precision,
                   help=TRAIN_PRECISION_HELP + " (default %(default)s: the shipped demo model's)")
    p.add_argument("--threads", type=int, help="CPU training threads (default: all allowed CPUs; on a busy shared "
                                               "machine 1 can be several times faster)")
    p.add_argument("--bundle", type=Path, metavar="DIR",
                   help="also unpack the models into DIR (totalspineseg/resources/demo to ship them)")


def _add_lite(sub) -> None:
    from ..training import lite_recipe, real_cases

    d = lite_recipe.LiteSettings()
    p = sub.add_parser("lite", help="build the lite model: synthetic images of real spine anatomy, end to end",
                       description="Render SynthSeg-style images on real vertebrae (from ../shared/data/anatomy or "
                                   "$TOTALSPINESEG_ANATOMY) and demo phantoms, prepare both datasets, train both "
                                   "steps starting from --init, and export release zips into OUT_DIR/exports. "
                                   "Stages already done in OUT_DIR are skipped.")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--all-stages", action="store_true",
                   help="run every recorded stage of the shipped model in order (OUT_DIR/stage1, stage2, ...), "
                        "each from the one before: this reproduces the bundled lite model; the options below "
                        "that set a stage (seed, images, epochs, init, steps) are then ignored")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--synthetic", type=int, default=d.n_synth, help="synthetic images (default %(default)s)")
    p.add_argument("--phantoms", type=int, default=d.n_phantoms, help="demo phantoms (default %(default)s)")
    p.add_argument("--synth-version", type=int, choices=[1, 2], default=d.synth_version,
                   help="what the synthetic images draw: 1 = lite stage 1's images, 2 = with sacral remnant "
                        "discs, tissue texture and more T2w-like contrasts (default %(default)s)")
    p.add_argument("--epochs", type=int, nargs=2, default=list(d.epochs), metavar=("STEP1", "STEP2"),
                   help="epochs of this stage (default: %(default)s)")
    p.add_argument("--iterations-per-epoch", type=int, default=d.iterations_per_epoch)
    p.add_argument("--init", default=d.init,
                   help="weights to start from: demo (first stage), lite (a later stage, from the shipped "
                        "weights), a model folder, or none (default: %(default)s)")
    p.add_argument("--steps", type=int, nargs="+", choices=[1, 2], default=list(d.steps),
                   help="train only these steps (run 1 and 2 in two processes to use two CPUs each with one "
                        "thread); the export needs both")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--processes", type=int, default=d.processes, help="worker processes for the images")
    p.add_argument("--precision", choices=TRAIN_PRECISIONS, default=d.precision,
                   help=TRAIN_PRECISION_HELP + " (default %(default)s; --all-stages uses each stage's recorded "
                                               "precision)")
    p.add_argument("--real", choices=real_cases.REAL_CHOICES, default=d.real,
                   help="also train on the partly labelled real scans of ../shared/data/real (or $TOTALSPINESEG_REAL):"
                        " none, one subject group (A or B: score the model on the other group only) or all; where "
                        "their manual labels say nothing, nnU-Net's ignore label (default %(default)s)")
    p.add_argument("--real-test-only-scans", action="store_true",
                   help="experiments: also train on the real scans whose sources allow testing only (the "
                        "fastcleverseg lumbar discs); such a model is never bundled into the package")
    p.add_argument("--real-copies", type=int, default=d.real_copies,
                   help="copies of each real scan in the training set: its share of the patches (default "
                        "%(default)s)")
    p.add_argument("--threads", type=int, help="CPU training threads (default: all allowed CPUs)")
    p.add_argument("--bundle", type=Path, metavar="DIR",
                   help="also unpack the models into DIR (totalspineseg/resources/lite to ship them)")


def _override(args) -> dict | None:
    if args.tiny_plans:
        return dict(training.TINY_OVERRIDE)
    if not args.plans_override:
        return None
    text = args.plans_override
    if text.endswith(".json") and Path(text).is_file():
        text = Path(text).read_text()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--plans-override: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise UsageError("--plans-override: expected a JSON object")
    return value


def _prepare(args) -> int:
    report = training.prepare(args.bids_dir, args.raw_dir, args.steps, args.labels_pattern, args.spacing,
                              args.overwrite, progress=not args.quiet)
    print(f"prepared {len(report.written)} case(s), skipped {len(report.skipped)}")
    for folder in report.datasets:
        print(folder)
    return 0


def _run(args) -> int:
    dirs = training.NnUNetDirs(args.nnunet_dir)
    plans_name = args.plans
    if args.tiny_plans and plans_name == "nnUNetPlans":
        plans_name = "nnUNetPlansTiny"
    if not args.skip_planning:
        training.plan_and_preprocess(dirs, args.dataset, args.planner, plans_name, args.configuration,
                                     _override(args), args.processes)
    training.write_splits(dirs, args.dataset)
    settings = training.TrainSettings(args.epochs, args.iterations_per_epoch, args.val_iterations, args.seed,
                                      args.continue_training, precision=args.precision)
    folder = training.train(dirs, args.dataset, plans_name, args.configuration, args.fold, args.device, settings,
                            args.threads)
    print(folder)
    return 0


def _export(args) -> int:
    fold = int(args.fold) if args.fold.isdigit() else args.fold
    for path in training.export_release(args.results_dir, args.out_dir, args.release, fold, args.checkpoint,
                                        args.model):
        print(path)
    return 0


def _demo(args) -> int:
    from ..training import demo_recipe

    settings = demo_recipe.DemoSettings(n_cases=args.cases, seed=args.seed, epochs=tuple(args.epochs),
                                        restart_epochs=tuple(args.restart_epochs), restarts=tuple(args.restarts),
                                        iterations_per_epoch=args.iterations_per_epoch, processes=args.processes,
                                        threads=args.threads, precision=args.precision)
    for path in demo_recipe.train_demo(args.out_dir, settings, args.device, args.bundle, progress=not args.quiet):
        print(path)
    return 0


def _lite(args) -> int:
    from ..training import lite_recipe

    if args.all_stages:
        print(lite_recipe.train_stages(args.out_dir, args.bundle, args.device, args.processes, args.threads,
                                       progress=not args.quiet))
        return 0
    init = None if str(args.init).lower() == "none" else args.init
    settings = lite_recipe.LiteSettings(n_synth=args.synthetic, n_phantoms=args.phantoms, seed=args.seed,
                                        epochs=tuple(args.epochs), iterations_per_epoch=args.iterations_per_epoch,
                                        processes=args.processes, threads=args.threads, init=init,
                                        steps=tuple(sorted(set(args.steps))), synth_version=args.synth_version,
                                        precision=args.precision, real=args.real, real_copies=args.real_copies,
                                        real_test_only=args.real_test_only_scans)
    for path in lite_recipe.train_lite(args.out_dir, settings, args.device, args.bundle, progress=not args.quiet):
        print(path)
    return 0


COMMANDS = {"prepare": _prepare, "run": _run, "export": _export, "demo": _demo, "lite": _lite}


def main(argv: list[str] | None = None) -> int:
    return run_command(get_parser(), lambda args: COMMANDS[args.command](args), argv)


if __name__ == "__main__":  # spawn-based nnU-Net pools re-import this module: keep the guard
    sys.exit(main())
