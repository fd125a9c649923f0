#!/usr/bin/env python3
"""Check a BIDS-App output folder: its file list, its group table, and (optionally) the BIDS validator.

    check_outputs.py OUT [--expected-list FILE] [--expected-tsv FILE --rtol 0.2] [--validator EXE]

Exit 0 when every requested check passes; every failure is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NUMERIC = ("n_vertebrae", "n_discs", "cord_mm3", "canal_mm3")


def file_list(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if p.is_file() and not p.relative_to(out).as_posix().startswith(".work/"))


def check_list(out: Path, expected: Path) -> list[str]:
    want, have = set(expected.read_text().split()), set(file_list(out))
    return [f"missing: {p}" for p in sorted(want - have)] + [f"unexpected: {p}" for p in sorted(have - want)]


def _table(path: Path) -> dict[str, dict]:
    header, *rows = [line.split("\t") for line in path.read_text().splitlines() if line]
    return {r[header.index("image_id")]: dict(zip(header, r, strict=False)) for r in rows}


def check_tsv(out: Path, expected: Path, rtol: float, columns=NUMERIC) -> list[str]:
    want, have = _table(expected), _table(out / "group_spine.tsv")
    problems = [f"group_spine.tsv: no row for {i}" for i in sorted(set(want) - set(have))]
    for image, row in want.items():
        for col in columns:
            if image in have and not math.isclose(float(have[image][col]), float(row[col]), rel_tol=rtol):
                problems.append(f"group_spine.tsv {image} {col}: {have[image][col]} (expected {row[col]} +-{rtol:.0%})")
    return problems


def check_validator(out: Path, exe: str) -> list[str]:
    proc = subprocess.run([exe, str(out), "--json"], capture_output=True, text=True, check=False)
    try:
        issues = json.loads(proc.stdout)["issues"]["issues"]
    except (json.JSONDecodeError, KeyError):
        return [f"{exe} failed: {proc.stderr.strip()[-500:]}"]
    return [f"validator: {i['code']} {i.get('location', '')}" for i in issues if i["severity"] == "error"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--expected-list", type=Path, default=HERE / "expected_outputs.txt")
    p.add_argument("--expected-tsv", type=Path, help="compare group_spine.tsv with this table")
    p.add_argument("--rtol", type=float, default=0.2, help="relative tolerance of the table check (default 0.2)")
    p.add_argument("--validator", help="a BIDS validator executable (e.g. bids-validator-deno)")
    args = p.parse_args(argv)
    problems = check_list(args.out, args.expected_list)
    if args.expected_tsv:
        problems += check_tsv(args.out, args.expected_tsv, args.rtol)
    if args.validator:
        problems += check_validator(args.out, args.validator)
    for line in problems:
        print(line)
    print(f"{args.out}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
