"""The one boundary between a console script and the user: logging set-up, parsing, exceptions to exit codes.

Every console script (and the BIDS-App) runs its body through `run_main`: an expected error becomes one line
on stderr and the exit code of its class (`errors.py`); an unexpected one becomes one line too, with the
traceback only under -v. `-v` means DEBUG, `-vv` also lets the libraries' own loggers speak, `-q` keeps
warnings and errors only; the same everywhere.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence

from .errors import ERROR_CLASSES, INTERRUPTED, InternalError, TotalSpineSegError, UsageError, exit_codes_help

_CHATTY_LIBRARIES = ("bidsschematools", "bids", "nibabel", "matplotlib", "PIL", "urllib3", "torch", "nnunetv2")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time of the call (so that redirections and tests see it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def log_level(verbose: int = 0, quiet: bool = False) -> int:
    if quiet:
        return logging.WARNING
    return logging.DEBUG if verbose > 0 else logging.INFO


def setup_logging(verbose: int = 0, quiet: bool = False, level: int | None = None) -> int:
    """One stderr handler on the root logger, replacing any this function installed before; returns the level.

    Handlers that an embedding program (or pytest) installed are left alone.
    """
    level = log_level(verbose, quiet) if level is None else level
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    library_level = logging.DEBUG if verbose > 1 else max(level, logging.WARNING)
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(library_level)
    return level


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the BIDS-Apps usage exit code (64) instead of 2, and the exit-code table in the epilog."""

    def __init__(self, *args, exit_codes: Sequence[type[TotalSpineSegError]] = ERROR_CLASSES, **kwargs):
        epilog = kwargs.pop("epilog", None)
        codes = exit_codes_help(exit_codes)
        kwargs["epilog"] = f"{epilog.rstrip()}\n\n{codes}" if epilog else codes
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(UsageError.exit_code, f"{self.prog}: error: {message}\n")


def add_logging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", "-v", action="count", default=0,
                        help="more messages: -v debug output and tracebacks, -vv also the libraries' own logs")
    parser.add_argument("--quiet", "-q", action="store_true", help="warnings and errors only, no progress bar")


def run_main(prog: str, body: Callable[[], int], verbose: Callable[[], int] = lambda: 0) -> int:
    """Run a command body and turn what it raises into one line on stderr and an exit code.

    `verbose` is asked after the failure (the body may have parsed -v by then): with -v an unexpected
    exception also prints its traceback.
    """
    try:
        return body()
    except SystemExit as exc:  # argparse: --help and --version (0), usage errors (64)
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else UsageError.exit_code)
    except TotalSpineSegError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run the same command again to resume", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a bare traceback
        if verbose() > 0:
            traceback.print_exc(file=sys.stderr)
        hint = "" if verbose() > 0 else " (run with -v for the traceback)"
        print(f"{prog}: internal error: {describe_exception(exc)}{hint}", file=sys.stderr)
        return InternalError.exit_code


def run_command(parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int],
                argv: Sequence[str] | None = None) -> int:
    """The `main()` of every console script: parse, set up logging, run `body(args)` through `run_main`."""
    seen: dict[str, int] = {}

    def parse_and_run() -> int:
        args = parser.parse_args(argv)
        seen["verbose"] = getattr(args, "verbose", 0) or 0
        setup_logging(seen["verbose"], getattr(args, "quiet", False))
        return body(args)

    return run_main(parser.prog, parse_and_run, verbose=lambda: seen.get("verbose", 0))


def describe_exception(exc: BaseException) -> str:
    """`Type: first line of the message`, for one-line reports of unexpected exceptions."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
