"""Run models on the public real scans of ../shared/data/real and score them against the manual labels.

Scored (see ../shared/data/real/README.md and each source's PROVENANCE.md for what the label values mean):

* cord Dice against the SCT manual cord masks: sagittal T2w (errsm_11/18/21, sct_example_data, sct_testing_data
  t2), sagittal T1w (sct_testing_data t1) and axial (errsm_18 gre, sct_testing_data t2s), reported separately;
* level identification at the SCT points inside the cord (errsm_* C2/T2, history_data_t2 C3/T4,
  sct_testing_data t2 C3/C5): the predicted vertebra at the point's superior-inferior position (`real_scores`);
* lumbar discs (fastcleverseg IVD_11/20/25): each manual disc numbered right, Dice of its expected label;
* vertebral bodies (fastcleverseg VB1_02): counting, splits, containment, and the L1-L5 numbering relative to the
  predicted sacrum (the manual mask carries no level ids);
* every other real scan of the README is run without labels: seconds per scan, errors.

    .venv/bin/python benchmarks/eval_real.py --weights demo [--weights lite] [--weights PATH ...]
        [--scans PATTERN ...] [--json FILE] [--markdown FILE] [--threads N] [--device auto|cpu|cuda]

`--weights` takes anything `totalspineseg.weights.resolve_model` accepts; several give one table with a column
group per model. Prints one Markdown table (a row per scan, then the summary) for benchmarks/RESULTS.md;
progress goes to stderr. Numbers on a real scan count only from a model that never trained on that scan.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import real_scores as rs  # noqa: E402

from totalspineseg import labels as L  # noqa: E402
from totalspineseg import volume, weights  # noqa: E402
from totalspineseg.pipeline import Models, PipelineOptions, segment  # noqa: E402
from totalspineseg.training.real_cases import IVD_TO_FINAL  # noqa: E402  (fastcleverseg IVD_*_GT values)

REAL = ROOT.parent / "shared" / "data" / "real"
NOTE = "numbers on a real scan count only from a model that never trained on that scan"

CORD_SAGITTAL_T2 = "sagittal T2w"
CORD_SAGITTAL_T1 = "sagittal T1w"
CORD_AXIAL = "axial"


@dataclass(frozen=True)
class Truth:
    kind: str  # "cord" | "landmarks" | "discs" | "bodies"
    path: str  # relative to the real-data root
    group: str = ""  # cord masks: CORD_SAGITTAL_T2, CORD_SAGITTAL_T1 or CORD_AXIAL


@dataclass(frozen=True)
class Scan:
    name: str
    image: str  # relative to the real-data root
    truths: tuple[Truth, ...] = ()


_GIT = "spinalcordtoolbox_git_history/testing/data"
_STD = "sct_testing_data"
_FCS = "fastcleverseg"


def _errsm(n: int) -> Scan:
    base = f"{_GIT}/errsm_{n}/t2"
    return Scan(f"errsm_{n}/t2", f"{base}/t2.nii.gz",
                (Truth("cord", f"{base}/t2_manual_segmentation.nii.gz", CORD_SAGITTAL_T2),
                 Truth("landmarks", f"{base}/t2_landmarks_C2_T2_center.nii.gz")))


#: Every real scan of the README, those with manual labels first.
SCANS: tuple[Scan, ...] = (
    _errsm(11),
    _errsm(18),
    _errsm(21),
    Scan("sct_example_data/t2", "spinalcordtoolbox_git_history/scripts/sct_example_data/t2/t2.nii.gz",
         (Truth("cord", "spinalcordtoolbox_git_history/scripts/sct_example_data/t2/t2_seg.nii.gz",
                CORD_SAGITTAL_T2),)),
    Scan("sct_testing_data/t2", f"{_STD}/t2/t2.nii.gz",
         (Truth("cord", f"{_STD}/t2/t2_seg-manual.nii.gz", CORD_SAGITTAL_T2),
          Truth("landmarks", f"{_STD}/t2/labels.nii.gz"))),
    Scan("sct_testing_data/t1", f"{_STD}/t1/t1w.nii.gz",
         (Truth("cord", f"{_STD}/t1/t1w_seg-manual.nii.gz", CORD_SAGITTAL_T1),)),
    Scan("sct_testing_data/history_data_t2", f"{_STD}/history_data_t2/t2.nii.gz",
         (Truth("landmarks", f"{_STD}/history_data_t2/labels.nii.gz"),)),
    Scan("errsm_18/gre", f"{_GIT}/errsm_18/gre/gre.nii.gz",
         (Truth("cord", f"{_GIT}/errsm_18/gre/segmentation_binary.nii.gz", CORD_AXIAL),)),
    Scan("sct_testing_data/t2s", f"{_STD}/t2s/t2s.nii.gz",
         (Truth("cord", f"{_STD}/t2s/t2s_seg.nii.gz", CORD_AXIAL),)),
    *(Scan(f"IVD_{n}", f"{_FCS}/IVD_{n}_I.nii.gz", (Truth("discs", f"{_FCS}/IVD_{n}_GT.nii.gz"),))
      for n in (11, 20, 25)),
    Scan("VB1_02", f"{_FCS}/VB1_02_I.nii.gz", (Truth("bodies", f"{_FCS}/VB1_02_GT.nii.gz"),)),
    Scan("errsm_20/t2", f"{_GIT}/errsm_20/t2/t2.nii.gz"),
    Scan("errsm_22/t2", f"{_GIT}/errsm_22/t2/t2.nii.gz"),
    Scan("PAM50_small_t2", f"{_STD}/template/template/PAM50_small_t2.nii.gz"),
    Scan("t2_lumbar", "sct_tutorial_data/single_subject/data/t2_lumbar/t2_lumbar.nii.gz"),
    Scan("t2_ms", "sct_tutorial_data/single_subject/data/t2_ms/t2.nii.gz"),
    Scan("TPTBox sample_mri", "TPTBox/TPTBox/tests/sample_mri/sub-mri_label-6_T2w.nii.gz"),
    Scan("TotalSegmentator example_mr_sm", "TotalSegmentator/tests/reference_files/example_mr_sm.nii.gz"),
)
SCANS_BY_NAME: dict[str, Scan] = {s.name: s for s in SCANS}


def select_scans(patterns: list[str] | None, scans: tuple[Scan, ...] = SCANS) -> list[Scan]:
    """The scans matching one of the patterns: a scan's exact name, else a glob or a substring of the name or
    image path."""
    if not patterns:
        return list(scans)
    names = {s.name for s in scans}

    def matches(scan: Scan, pattern: str) -> bool:
        if pattern in names:
            return scan.name == pattern
        if any(c in pattern for c in "*?["):
            return fnmatch.fnmatch(scan.name, pattern) or fnmatch.fnmatch(scan.image, pattern)
        return pattern in scan.name or pattern in scan.image

    return [s for s in scans if any(matches(s, p) for p in patterns)]


# ---------------------------------------------------------------------------------------------------------
# One scan


@dataclass
class ScanResult:
    scan: str
    image: str
    seconds: float = 0.0
    error: str | None = None
    found: str = ""
    warnings: int = 0
    cord: dict[str, float] = field(default_factory=dict)  # group -> Dice
    landmarks: list[rs.LandmarkScore] = field(default_factory=list)
    discs: list[rs.DiscScore] = field(default_factory=list)
    bodies: rs.BodiesScore | None = None

    def score_text(self) -> str:
        parts = [f"cord Dice {d:.2f}" for d in self.cord.values()]
        if self.landmarks:
            parts.append(", ".join(p.text() for p in self.landmarks))
        if self.discs:
            right = sum(d.right for d in self.discs)
            parts.append(f"discs numbered right {right}/{len(self.discs)}, mean Dice "
                         f"{np.mean([d.dice for d in self.discs]):.2f}: " + ", ".join(d.text() for d in self.discs))
        if self.bodies is not None:
            parts.append(self.bodies.text())
        text = "; ".join(parts)
        return f"error: {self.error}" + (f" ({text})" if text else "") if self.error else text

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in ("landmarks", "discs", "bodies")}
        out["landmarks"] = [{**asdict(p), "verdict": p.verdict, "text": p.text()} for p in self.landmarks]
        out["discs"] = [{**asdict(d), "right": d.right, "text": d.text()} for d in self.discs]
        if self.bodies is not None:
            b = self.bodies
            out["bodies"] = {**asdict(b), "distinct": b.distinct, "one_to_one": b.one_to_one,
                             "split": [x.truth for x in b.split], "missed": [x.truth for x in b.missed],
                             "mean_containment": b.mean_containment, "lumbar_right": b.lumbar_right,
                             "lumbar": len(b.lumbar), "text": b.text()}
        return out


def describe(seg: np.ndarray) -> str:
    """What a final segmentation holds: the numbered vertebrae (span), the discs, the cord."""
    present = {int(v) for v in np.unique(seg) if v}
    numbered = [v for v in L.VERTEBRAE_POSSIBLE if v in present and v != L.SACRUM]
    discs = [v for v in present if L.is_disc(v)]
    parts = [f"{len(numbered)} numbered vertebrae" + (
        f" ({rs.name_of(numbered[0])}..{rs.name_of(numbered[-1])})" if numbered else "")]
    parts += ["sacrum"] * (L.SACRUM in present) + ["unnumbered vertebrae"] * (L.VERTEBRA_UNNUMBERED in present)
    parts += [f"{len(discs)} discs", f"cord {'yes' if L.CORD in present else 'no'}"]
    return ", ".join(parts)


def _same_grid(seg: np.ndarray, affine: np.ndarray, truth: volume.Volume) -> None:
    if seg.shape != truth.shape or not np.allclose(affine, truth.affine, atol=1e-3):
        raise ValueError(f"{truth.path.name}: not on the grid of the image ({truth.shape} vs {seg.shape})")


def score_scan(result: ScanResult, seg: np.ndarray, affine: np.ndarray, scan: Scan, root: Path) -> None:
    """Fill `result` with the scores of a final segmentation (on the image's grid) against the scan's truths."""
    for truth in scan.truths:
        vol = volume.load_volume(root / truth.path)
        if truth.kind == "landmarks":  # world coordinates: any grid will do
            result.landmarks += rs.score_landmarks(seg, affine, vol.data, vol.affine)
            continue
        _same_grid(seg, affine, vol)
        if truth.kind == "cord":
            result.cord[truth.group] = rs.cord_dice(seg, vol.data)
        elif truth.kind == "discs":
            result.discs = rs.score_discs(seg, vol.data, IVD_TO_FINAL)
        elif truth.kind == "bodies":
            result.bodies = rs.score_bodies(seg, vol.data, affine)
        else:
            raise ValueError(f"unknown ground-truth kind {truth.kind!r}")


def evaluate_scan(scan: Scan, models: Models, root: Path = REAL, options: PipelineOptions | None = None) -> ScanResult:
    """Segment one real scan with the real pipeline and score it; an error is recorded, never raised."""
    result = ScanResult(scan.name, scan.image)
    start = time.perf_counter()
    try:
        out = segment(root / scan.image, models, None, options or PipelineOptions())
        result.seconds = time.perf_counter() - start
        seg = out.final.step2 if out.final.step2 is not None else out.final.step1
        result.found, result.warnings = describe(seg), len(out.warnings)
        score_scan(result, seg, out.final.grid.affine, scan, root)
    except Exception as exc:  # noqa: BLE001 - a benchmark records every failure and goes on
        if not result.seconds:
            result.seconds = time.perf_counter() - start
        result.error = f"{type(exc).__name__}: {exc}".replace(str(root) + os.sep, "")
        logging.getLogger(__name__).debug("%s", traceback.format_exc())
    result.seconds = round(result.seconds, 1)
    return result


# ---------------------------------------------------------------------------------------------------------
# Summary


def expected_counts(scans: list[Scan], root: Path = REAL) -> dict[str, int]:
    """How many landmark points and manual discs the selected scans hold (a failed run scores 0 on them)."""
    counts = {"landmarks": 0, "discs": 0}
    for scan in scans:
        for truth in scan.truths:
            if truth.kind == "landmarks":
                counts["landmarks"] += len(rs.landmark_points(volume.load_volume(root / truth.path).data, np.eye(4)))
            elif truth.kind == "discs":
                data = np.rint(volume.load_volume(root / truth.path).data)
                counts["discs"] += sum(bool((data == v).any()) for v in IVD_TO_FINAL)
    return counts


def summarize(results: list[ScanResult], scans: list[Scan], counts: dict[str, int]) -> dict:
    """The summary of one model's results; a scan that failed counts 0 for every score it should have had."""
    by_name = {r.scan: r for r in results}
    cord: dict[str, list[float]] = {}
    for scan in scans:
        for truth in scan.truths:
            if truth.kind == "cord":
                cord.setdefault(truth.group, []).append(by_name[scan.name].cord.get(truth.group, 0.0))
    verdicts = [p.verdict for r in results for p in r.landmarks]
    discs = [d for r in results for d in r.discs]
    bodies = [(r.scan, r.bodies) for r in results if r.bodies is not None]
    return {
        "cord_dice": {g: {"mean": float(np.mean(v)), "n": len(v)} for g, v in cord.items()},
        "landmarks": {"right": verdicts.count("right"), "wrong": verdicts.count("wrong"),
                      "none": counts["landmarks"] - verdicts.count("right") - verdicts.count("wrong"),
                      "n": counts["landmarks"]},
        "discs": {"right": sum(d.right for d in discs), "n": counts["discs"],
                  "mean_dice": float(np.sum([d.dice for d in discs]) / counts["discs"]) if counts["discs"] else None,
                  "mean_dice_found": (float(np.sum([d.dice_found for d in discs]) / counts["discs"])
                                      if counts["discs"] else None)},
        "bodies": {name: {"bodies": len(b.bodies), "distinct": b.distinct, "one_to_one": b.one_to_one,
                          "split": len(b.split), "missed": len(b.missed), "overlapping": b.overlapping,
                          "mean_containment": b.mean_containment, "lumbar_right": b.lumbar_right,
                          "lumbar": len(b.lumbar), "identity": b.identity} for name, b in bodies},
        "runs": {"ok": sum(r.error is None for r in results), "n": len(results),
                 "errors": [f"{r.scan}: {r.error}" for r in results if r.error],
                 "seconds_total": round(sum(r.seconds for r in results), 1),
                 "seconds_median": float(np.median([r.seconds for r in results])) if results else 0.0},
    }


def summary_rows(summaries: list[dict]) -> list[tuple[str, list[str]]]:
    """(what, one cell per model) for the summary block of the table."""
    rows = []
    for group in (CORD_SAGITTAL_T2, CORD_SAGITTAL_T1, CORD_AXIAL):
        cells = [s["cord_dice"].get(group) for s in summaries]
        if any(cells):
            n = next(c["n"] for c in cells if c)
            rows.append((f"mean cord Dice, SCT {group} (n={n})", [f"{c['mean']:.2f}" if c else "" for c in cells]))
    if any(s["landmarks"]["n"] for s in summaries):
        rows.append(("landmarks (vertebra at SCT points) right", [
            f"{m['right']}/{m['n']} (wrong {m['wrong']}, none {m['none']})" for m in (s["landmarks"] for s in summaries)
        ]))
    if any(s["discs"]["n"] for s in summaries):
        rows.append(("lumbar discs numbered right; mean disc Dice (expected label; covering label, any number)", [
            f"{d['right']}/{d['n']}; {d['mean_dice']:.2f}; {d['mean_dice_found']:.2f}"
            for d in (s["discs"] for s in summaries)]))
    for name in sorted({n for s in summaries for n in s["bodies"]}):
        cells = []
        for s in summaries:
            b = s["bodies"].get(name)
            if b is None:
                cells.append("failed")
                continue
            lumbar = f"L1-L5 right {b['lumbar_right']}/{b['lumbar']}" if b["lumbar"] else "L1-L5 level unknown"
            mapping = "one to one" if b["one_to_one"] else "not one to one"
            cells.append(f"{b['distinct']} distinct / {b['bodies']} bodies ({mapping}), "
                         f"containment {b['mean_containment']:.2f}, {lumbar}")
        rows.append((f"{name} vertebral bodies: counting, containment, L1-L5", cells))
    runs = [s["runs"] for s in summaries]
    rows.append(("runs without error; seconds total (median per scan)",
                 [f"{r['ok']}/{r['n']}; {r['seconds_total']:.0f} ({r['seconds_median']:.1f})" for r in runs]))
    return rows


# ---------------------------------------------------------------------------------------------------------
# Report


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_weights(name: str, paths: weights.ModelPaths) -> str:
    """A weights name with the checksums of its checkpoints (from the manifest, or computed)."""
    from totalspineseg.weights.checks import sha256_file

    sums = []
    for step in ("step1", "step2"):
        digest = (paths.sha256 or {}).get(step) or sha256_file(paths.checkpoint(step))
        sums.append(f"{step} sha256 {digest[:12]}")
    return f"`{name}` (release {paths.release}, {', '.join(sums)})"


def header_line(models: list[tuple[str, str, Models]]) -> str:
    devices = sorted({m.device for _, _, m in models})
    return (f"{time.strftime('%Y-%m-%d')}, {cpu_model()} ({os.cpu_count()} cores), device {', '.join(devices)}; "
            f"weights: {'; '.join(desc for _, desc, _ in models)}. Note: {NOTE}.")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(names: list[str], results: list[list[ScanResult]], summaries: list[dict]) -> str:
    """One table: a row per scan (a column group per model), then the summary rows."""
    head = ["scan"] + [f"{n}: {c}" for n in names for c in ("found", "score vs. manual labels", "s")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, first in enumerate(results[0]):
        cells = [first.scan]
        for per_model in results:
            r = per_model[i]
            cells += [r.found if not r.error else "failed", r.score_text(), f"{r.seconds:.1f}"]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    for what, cells in summary_rows(summaries):
        row = [f"**{what}**"] + [c for cell in cells for c in ("", cell, "")]
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines)


def load_models(name: str, device: str = "auto", threads: int | None = None) -> tuple[str, Models]:
    """Resolve a weights name (anything `weights.resolve_model` accepts) and load its networks."""
    paths = weights.resolve_model(name)
    return describe_weights(name, paths), Models.load(paths, device=device, threads=threads)


def evaluate(models: Models, scans: list[Scan], root: Path = REAL, label: str = "",
             counts: dict[str, int] | None = None) -> tuple[list[ScanResult], dict]:
    """One loaded model on every scan (progress on stderr): the per-scan results and their summary."""
    results = []
    for scan in scans:
        results.append(evaluate_scan(scan, models, root))
        r = results[-1]
        print(f"  [{label or models.release}] {scan.name}: {r.seconds:.1f} s; {r.found or 'failed'}; "
              f"{r.score_text()}", file=sys.stderr, flush=True)
    return results, summarize(results, scans, counts or expected_counts(scans, root))


def run(weights_names: list[str], scans: list[Scan], root: Path = REAL, device: str = "auto",
        threads: int | None = None) -> dict:
    """Every model on every scan: the report (header, table, per-scan results, summaries)."""
    counts = expected_counts(scans, root)
    models, results, summaries = [], [], []
    for name in weights_names:
        desc, loaded = load_models(name, device, threads)
        models.append((name, desc, loaded))
        per_model, summary = evaluate(loaded, scans, root, name, counts)
        results.append(per_model)
        summaries.append(summary)
    header = header_line(models)
    table = markdown_table(weights_names, results, summaries)
    return {"header": header, "table": table, "note": NOTE,
            "models": [{"name": n, "weights": d, "device": m.device, "precision": m.precision}
                       for n, d, m in models],
            "scans": [asdict(s) for s in scans],
            "results": {n: [r.to_dict() for r in per] for n, per in zip(weights_names, results, strict=True)},
            "summary": dict(zip(weights_names, summaries, strict=True))}


def run_folds(trained_on: dict[str, str], scans: list[Scan], root: Path = REAL, device: str = "auto",
              threads: int | None = None) -> dict:
    """Cross-validation over the subject groups of `training.real_cases`: every scan scored by the model trained on
    the other group (`trained_on`: group -> weights); scans of subjects never trained on by the first group's model.
    One column group in the table; the per-scan rows say which model scored them."""
    from totalspineseg.training.real_cases import SPLITS, group_of_image

    if sorted(trained_on) != sorted(SPLITS):
        raise ValueError(f"--folds needs one model per group {SPLITS}, got {sorted(trained_on)}")
    counts = expected_counts(scans, root)
    loaded = {g: load_models(name, device, threads) for g, name in trained_on.items()}
    other = {a: b for a, b in zip(SPLITS, SPLITS[::-1], strict=True)}
    results, scorer = [], {}
    for scan in scans:
        group = group_of_image(scan.image)
        by = other[group] if group else SPLITS[0]
        results.append(evaluate_scan(scan, loaded[by][1], root))
        results[-1].found = f"[trained on {by}] " + results[-1].found
        scorer[scan.name] = by
        r = results[-1]
        print(f"  [fold {by}] {scan.name}: {r.seconds:.1f} s; {r.found or 'failed'}; {r.score_text()}",
              file=sys.stderr, flush=True)
    summary = summarize(results, scans, counts)
    name = "2-fold"
    models = [(f"trained on {g}", f"trained on {g}: {desc}", m) for g, (desc, m) in loaded.items()]
    header = header_line(models) + (" Cross-validation by subject group (training.real_cases.REAL_SCANS): each "
                                    "scan scored by the model that did not train on its subject.")
    return {"header": header, "table": markdown_table([name], [results], [summary]), "note": NOTE,
            "models": [{"name": n, "weights": d, "device": m.device, "precision": m.precision} for n, d, m in models],
            "scans": [asdict(s) for s in scans], "scored_by": scorer,
            "results": {name: [r.to_dict() for r in results]}, "summary": {name: summary}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", action="append", help="demo, lite, official, a release name or a model folder; "
                   "repeat for a column group per model (default: demo)")
    p.add_argument("--folds", nargs=2, metavar=("TRAINED_ON_A", "TRAINED_ON_B"),
                   help="cross-validation instead of --weights: the models trained with --real A and --real B; each "
                        "scan is scored by the one that did not train on its subject")
    p.add_argument("--scans", action="append", metavar="PATTERN",
                   help="only the scans whose name or image path matches (glob or substring); repeatable")
    p.add_argument("--root", type=Path, default=REAL, help=f"the real-data folder (default {REAL})")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "_out" / "eval_real.json")
    p.add_argument("--markdown", type=Path, default=None, help="also write the header and table to this file")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--verbose", action="store_true", help="show the pipeline's warnings and tracebacks")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.ERROR, stream=sys.stderr)
    if not args.root.is_dir():
        print(f"eval_real: {args.root} is absent: no real scans to run", file=sys.stderr)
        return 66
    scans = [s for s in select_scans(args.scans) if (args.root / s.image).is_file()]
    if not scans:
        print(f"eval_real: no scan matches {args.scans} in {args.root}", file=sys.stderr)
        return 66
    if args.folds:
        report = run_folds(dict(zip(("A", "B"), args.folds, strict=True)), scans, args.root, args.device, args.threads)
    else:
        report = run(args.weights or ["demo"], scans, args.root, args.device, args.threads)
    text = f"{report['header']}\n\n{report['table']}\n"
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
