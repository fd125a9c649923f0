"""Evaluate the bundled demo model end to end with the real pipeline.

* 12 held-out phantoms (seeds never used in training; every field of view, three orientations, both contrasts,
  one with an L6; thoracic-only views numbered through their localizer): discs and vertebrae identified
  (targets: >= 95 %) and mean Dice over every present label (target: >= 0.85).
* With --real: the public real scans of ../shared/data/real, reported only (the demo model has never seen real
  anatomy).

    .venv/bin/python benchmarks/eval_demo.py [--weights demo] [--real] [--no-disc-completion] [--json FILE]

Prints Markdown tables to paste into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from totalspineseg import labels as L  # noqa: E402
from totalspineseg import volume, weights  # noqa: E402
from totalspineseg.errors import TotalSpineSegError  # noqa: E402
from totalspineseg.pipeline import Models, PipelineOptions, segment  # noqa: E402
from totalspineseg.training import demo_recipe, metrics  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"
# (scan, ground truth, how to read the ground truth): "cord" = binary cord mask, "ivd" = discs 1 = L5-S ... 5 = L1-L2.
REAL_SCANS = (
    ("sct_testing_data/t2/t2.nii.gz", "sct_testing_data/t2/t2_seg-manual.nii.gz", "cord"),
    ("spinalcordtoolbox_git_history/scripts/sct_example_data/t2/t2.nii.gz",
     "spinalcordtoolbox_git_history/scripts/sct_example_data/t2/t2_seg.nii.gz", "cord"),
    ("sct_tutorial_data/single_subject/data/t2_lumbar/t2_lumbar.nii.gz", None, None),
    ("fastcleverseg/IVD_11_I.nii.gz", "fastcleverseg/IVD_11_GT.nii.gz", "ivd"),
    ("fastcleverseg/IVD_20_I.nii.gz", "fastcleverseg/IVD_20_GT.nii.gz", "ivd"),
    ("fastcleverseg/IVD_25_I.nii.gz", "fastcleverseg/IVD_25_GT.nii.gz", "ivd"),
    ("TPTBox/TPTBox/tests/sample_mri/sub-mri_label-6_T2w.nii.gz", None, None),
    ("TotalSegmentator/tests/reference_files/example_mr_sm.nii.gz", None, None),
)
IVD_TO_FINAL = {1: L.DISC_L5_S, 2: 95, 3: 94, 4: 93, 5: 92}


def phantom_table(scores: list[demo_recipe.CaseScore]) -> str:
    rows = ["| seed | FOV | orientation | voxel (mm) | contrast | identified | mean Dice | time (s) | notes |",
            "|---|---|---|---|---|---|---|---|---|"]
    for s in scores:
        spec = s.spec
        notes = []
        if s.used_localizer:
            notes.append("localizer")
        if spec.extra_lumbar:
            notes.append("L6")
        if s.not_identified:
            notes.append("missed " + ", ".join(L.FINAL[v].short for v in s.not_identified))
        if s.error:
            notes.append(f"error: {s.error}")
        voxel = "x".join(f"{v:g}" for v in spec.voxel)
        rows.append(f"| {spec.seed} | {spec.fov} | {spec.orientation} | {voxel} | {spec.contrast} | "
                    f"{len(s.structures) - len(s.not_identified)}/{len(s.structures)} | {s.mean_dice:.3f} | "
                    f"{s.seconds:.1f} | {'; '.join(notes)} |")
    return "\n".join(rows)


def per_kind_dice(scores: list[demo_recipe.CaseScore]) -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for s in scores:
        for label, d in s.dice.items():
            groups.setdefault(L.FINAL[label].kind, []).append(d)
    return {kind: float(np.mean(v)) for kind, v in sorted(groups.items())}


def run_phantoms(models: Models, options: PipelineOptions) -> tuple[list[demo_recipe.CaseScore], dict]:
    scores = []
    for spec in demo_recipe.HELD_OUT:
        scores.append(demo_recipe.evaluate(spec, models, options))
        s = scores[-1]
        print(f"  {spec.name}: {s.identification_rate:.1%} identified, Dice {s.mean_dice:.3f}, {s.seconds:.1f} s",
              file=sys.stderr, flush=True)
    return scores, demo_recipe.summarize(scores)


def describe(seg: np.ndarray) -> str:
    present = metrics.present_labels(seg)
    numbered = [L.FINAL[v].short for v in present if v in L.VERTEBRAE_POSSIBLE]
    discs = [v for v in present if L.FINAL.get(v) and L.FINAL[v].kind == "disc"]
    span = f" ({numbered[0]}..{numbered[-1]})" if numbered else ""
    unnumbered = " + unnumbered ones" if L.VERTEBRA_UNNUMBERED in present else ""
    return (f"{len(numbered)} numbered vertebrae{span}{unnumbered}, {len(discs)} disc labels, "
            f"cord {'yes' if L.CORD in present else 'no'}")


def score_real(seg: np.ndarray, truth_path: Path | None, kind: str | None) -> str:
    if truth_path is None:
        return ""
    truth = volume.load_volume(truth_path).data
    if kind == "cord":
        cord = metrics.dice_per_label((seg == L.CORD).astype(np.uint8), (truth > 0.5).astype(np.uint8), [1])
        return f"cord Dice {cord.get(1, 0.0):.2f}"
    final = np.zeros(truth.shape, np.uint8)
    for ivd, disc in IVD_TO_FINAL.items():
        final[np.rint(truth) == ivd] = disc
    rate, failures = metrics.identification_rate(seg, final, kinds=("disc",))
    binary = metrics.dice_per_label(np.isin(seg, L.DISCS_POSSIBLE).astype(np.uint8), (final > 0).astype(np.uint8), [1])
    return f"discs L1-L2..L5-S: {rate:.0%} numbered right, disc Dice (any label) {binary.get(1, 0.0):.2f}"


def run_real(models: Models, root: Path) -> list[dict]:
    rows = []
    for scan, truth, kind in REAL_SCANS:
        path = root / scan
        if not path.is_file():
            continue
        start = time.perf_counter()
        try:
            result = segment(path, models, None, PipelineOptions(progress=False))
            seg = result.final.step2
            truth_path = root / truth if truth else None
            row = {"scan": scan, "found": describe(seg), "score": score_real(seg, truth_path, kind),
                   "warnings": len(result.warnings)}
        except (TotalSpineSegError, ValueError) as exc:
            row = {"scan": scan, "found": f"failed: {exc}".replace(str(root) + "/", ""), "score": "", "warnings": 0}
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(f"  {scan}: {row['found']} {row['score']}", file=sys.stderr, flush=True)
    return rows


def real_table(rows: list[dict]) -> str:
    lines = ["| scan | what the demo model labels | score vs. manual labels | warnings | time (s) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['scan']} | {r['found']} | {r['score']} | {r['warnings']} | {r['seconds']} |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default="demo", help="demo (default) or a model folder")
    p.add_argument("--real", action="store_true", help=f"also run the real scans in {REAL}")
    p.add_argument("--skip-phantoms", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-disc-completion", action="store_true",
                   help="score step 2's discs as its network gave them (upstream behaviour)")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "_out" / "eval_demo.json")
    args = p.parse_args()

    models = Models.load(weights.resolve_model(args.weights), device="cpu", threads=args.threads)
    report: dict = {"weights": args.weights, "disc_completion": not args.no_disc_completion}
    if not args.skip_phantoms:
        options = PipelineOptions(progress=False, complete_discs=not args.no_disc_completion)
        scores, summary = run_phantoms(models, options)
        summary["dice_by_kind"] = per_kind_dice(scores)
        report["phantoms"] = {"summary": summary, "cases": [
            {"case": s.spec.name, "identification_rate": s.identification_rate, "not_identified": s.not_identified,
             "mean_dice": s.mean_dice, "seconds": round(s.seconds, 1), "error": s.error} for s in scores]}
        print("## Demo model on 12 held-out phantoms\n")
        print(phantom_table(scores))
        print(f"\nOverall: {summary['identified']}/{summary['structures']} discs and vertebrae identified "
              f"({summary['identification_rate']:.1%}; target >= 95 %), mean Dice {summary['mean_dice']:.3f} "
              f"over all present labels (target >= 0.85), {summary['errors']} failed run(s).")
        print("Mean Dice by kind: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["dice_by_kind"].items()))
    if args.real:
        if not REAL.is_dir():
            print(f"\n(real scans skipped: {REAL} is absent)")
        else:
            rows = run_real(models, REAL)
            report["real"] = rows
            print("\n## Demo model on real scans (reported only)\n")
            print(real_table(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
