"""Time step-1 and step-2 labeling on a whole-spine phantom at 1 mm (exact class maps from the truth).

    python benchmarks/bench_labeling.py [--repeat 5] [--seed 3]

Prints a Markdown table; paste it into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time
from datetime import date

from totalspineseg import labels as L
from totalspineseg.labeling import label_step1, label_step2
from totalspineseg.postprocess import disc_level_points
from totalspineseg.synth import phantom


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    ph = phantom.make_phantom(seed=args.seed, fov="whole")
    step1 = L.final_to_step1(ph.labels)
    step2 = L.final_to_step2(ph.labels)
    rows = []
    for name, fn in (
        ("step-1 labeling", lambda: label_step1(step1, ph.affine)),
        ("step-2 labeling", lambda: label_step2(step2, ph.affine)),
        ("disc-level points", lambda: disc_level_points(ph.labels)),
    ):
        fn()  # warm-up
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        rows.append((name, statistics.median(times), min(times)))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {platform.node()} ({platform.processor() or platform.machine()}), "
          f"{len(__import__('os').sched_getaffinity(0))} CPUs, python {platform.python_version()}; date {date.today()}")
    print(f"input: whole-spine phantom seed {args.seed}, shape {ph.labels.shape} at 1 mm; repeats {args.repeat}\n")
    print("| stage | median (s) | best (s) |\n|---|---|---|")
    for name, med, best in rows:
        print(f"| {name} | {med:.2f} | {best:.2f} |")
    print(f"\npeak RSS of the benchmark process: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
