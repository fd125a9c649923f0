"""Shared plumbing for the console scripts: logging set-up and turning exceptions into exit codes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from ..errors import TotalSpineSegError


def setup_logging(quiet: bool = False, verbose: int = 0) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 0 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr, force=True)
    logging.captureWarnings(True)


def run_main(body: Callable[[], int], prog: str) -> int:
    """Run a command body; expected errors become one line on stderr and their exit code."""
    try:
        return body()
    except TotalSpineSegError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
