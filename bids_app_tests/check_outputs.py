#!/usr/bin/env python3
"""Check a BIDS-App output folder: its file list, its group table, and (optionally) the BIDS validator.

    check_outputs.py OUT [--expected-list FILE] [--expected-tsv FILE --rtol 0.2] [--validator EXE [--scratch DIR]]
                         [--lock FILE]

--lock: also check that the Python environment running this script holds exactly the packages of FILE
(requirements/lock-cpu.txt; the totalspineseg package itself aside); run inside the image, it checks the image.
Exit 0 when every requested check passes; every failure is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
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


def check_validator(out: Path, exe: str, scratch: Path | None = None) -> list[str]:
    env = dict(os.environ)
    if scratch is not None:  # a read-only container: deno's cache and temp files go there
        env.update(DENO_DIR=str(scratch / "deno"), TMPDIR=str(scratch))
    proc = subprocess.run([exe, str(out), "--json"], capture_output=True, text=True, check=False, env=env)
    try:
        issues = json.loads(proc.stdout)["issues"]["issues"]
    except (json.JSONDecodeError, KeyError):
        return [f"{exe} failed: {proc.stderr.strip()[-500:]}"]
    return [f"validator: {i['code']} {i.get('location', '')}" for i in issues if i["severity"] == "error"]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check_lock(lock: Path, ignore=("totalspineseg",)) -> list[str]:
    """The installed distributions of this interpreter against the exact pins of a lock file."""
    from importlib.metadata import distributions

    want = {}
    for line in lock.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.split("#")[0].strip().partition("==")
            want[_canonical(name)] = version
    have = {_canonical(d.metadata["Name"]): d.version for d in distributions()}
    for name in ignore:
        have.pop(name, None)
    problems = [f"lock: {n}=={v} is not installed" for n, v in sorted(want.items()) if n not in have]
    problems += [f"lock: {n} {have[n]} installed, the lock says {v}" for n, v in sorted(want.items())
                 if n in have and have[n] != v]
    problems += [f"lock: {n}=={v} installed but not in the lock" for n, v in sorted(have.items()) if n not in want]
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--expected-list", type=Path, default=HERE / "expected_outputs.txt")
    p.add_argument("--expected-tsv", type=Path, help="compare group_spine.tsv with this table")
    p.add_argument("--rtol", type=float, default=0.2, help="relative tolerance of the table check (default 0.2)")
    p.add_argument("--validator", help="a BIDS validator executable (e.g. bids-validator-deno)")
    p.add_argument("--scratch", type=Path, help="a writable folder for the validator's cache (read-only containers)")
    p.add_argument("--lock", type=Path, help="check the installed packages against this lock file")
    args = p.parse_args(argv)
    checks = [(f"file list: {len(args.expected_list.read_text().split())} files, as {args.expected_list.name}",
               lambda: check_list(args.out, args.expected_list))]
    if args.expected_tsv:
        checks.append((f"group_spine.tsv: within {args.rtol:.0%} of {args.expected_tsv.name}",
                       lambda: check_tsv(args.out, args.expected_tsv, args.rtol)))
    if args.validator:
        checks.append((f"BIDS validator ({Path(args.validator).name}): no errors",
                       lambda: check_validator(args.out, args.validator, args.scratch)))
    if args.lock:
        checks.append((f"installed packages: exactly {args.lock.name}", lambda: check_lock(args.lock)))
    problems = []
    for title, check in checks:
        found = check()
        print(f"{'ok  ' if not found else 'FAIL'} {title}")
        for line in found:
            print(f"     {line}")
        problems += found
    print(f"{args.out}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
