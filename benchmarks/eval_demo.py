"""Evaluate the bundled demo model end to end with the real pipeline.

* 12 held-out phantoms (seeds never used in training; every field of view, three orientations, both contrasts,
  one with an L6; thoracic-only views numbered through their localizer): discs and vertebrae identified
  (targets: >= 95 %) and mean Dice over every present label (target: >= 0.85).
* With --real: the public real scans of ../shared/data/real, scored by benchmarks/eval_real.py's functions
  (reported only: the demo model has never seen real anatomy). `eval_real.py` itself compares several models.

    .venv/bin/python benchmarks/eval_demo.py [--weights demo] [--real] [--no-disc-completion] [--json FILE]

Prints Markdown tables to paste into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import eval_real  # noqa: E402

from totalspineseg import labels as L  # noqa: E402
from totalspineseg import weights  # noqa: E402
from totalspineseg.pipeline import Models, PipelineOptions  # noqa: E402
from totalspineseg.training import demo_recipe  # noqa: E402

REAL = eval_real.REAL
#: (scan, ground truth, kind) of the old --real mode, kept for benchmarks/bench_precision.py: use eval_real.SCANS.
REAL_SCANS = tuple((scan.image, None, None) for scan in eval_real.SCANS)


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
        print(f"## {args.weights} model on 12 held-out phantoms\n")
        print(phantom_table(scores))
        print(f"\nOverall: {summary['identified']}/{summary['structures']} discs and vertebrae identified "
              f"({summary['identification_rate']:.1%}; target >= 95 %), mean Dice {summary['mean_dice']:.3f} "
              f"over all present labels (target >= 0.85), {summary['errors']} failed run(s).")
        print("Mean Dice by kind: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["dice_by_kind"].items()))
    if args.real:
        if not REAL.is_dir():
            print(f"\n(real scans skipped: {REAL} is absent)")
        else:
            scans = [s for s in eval_real.SCANS if (REAL / s.image).is_file()]
            results, summary = eval_real.evaluate(models, scans, REAL, args.weights)
            report["real"] = {"results": [r.to_dict() for r in results], "summary": summary}
            print(f"\n## Real scans (`eval_real.py`; {eval_real.NOTE})\n")
            print(eval_real.markdown_table([args.weights], [results], [summary]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
