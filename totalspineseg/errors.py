"""Every error the tool raises on purpose, each with the exit code the console scripts turn it into.

Messages are one line and name the file and the problem. The codes follow the BIDS-Apps execution spec
(sysexits.h where it has a meaning), and the same code means the same thing in every console script.
`exit_codes_help()` is the table that `--help` prints; it is built from the classes, so the two cannot drift.
"""

from __future__ import annotations

SOME_IMAGE_FAILED = 1
INTERRUPTED = 130


class TotalSpineSegError(Exception):
    """Base class for every error the tool raises on purpose."""

    exit_code = 1
    meaning = "an error (see the message)"


class UsageError(TotalSpineSegError):
    """The command line is wrong: an unknown option, a bad value, a missing argument."""

    exit_code = 64  # EX_USAGE
    meaning = "usage error"


class InputError(TotalSpineSegError, ValueError):
    """An input file is unreadable, or not a usable 3-D/4-D NIfTI image."""

    exit_code = 65  # EX_DATAERR: input data incorrect
    meaning = "bad input data"

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class MissingInput(TotalSpineSegError):
    """An input file or folder does not exist."""

    exit_code = 66  # EX_NOINPUT
    meaning = "missing input"


class InvalidDataset(TotalSpineSegError):
    """The input is not a valid BIDS dataset."""

    exit_code = 16
    meaning = "invalid BIDS input"


class UnknownLevel(TotalSpineSegError):
    """The analysis level is neither participant nor group."""

    exit_code = 17
    meaning = "unknown analysis level"


class NothingSelected(TotalSpineSegError):
    """The participant, session and filter options selected no image."""

    exit_code = 18
    meaning = "the filters selected nothing"


class CannotCreate(TotalSpineSegError):
    """An output or scratch folder cannot be created or written."""

    exit_code = 73  # EX_CANTCREAT
    meaning = "output folder cannot be created or written"


class WeightsError(TotalSpineSegError):
    """Model weights are missing, corrupt or of the wrong layout."""

    exit_code = 78  # EX_CONFIG: install, mount or bake the weights
    meaning = "no usable weights (install, mount or bake them)"


class LabelingError(TotalSpineSegError):
    """The class map of one image cannot be labeled (for example no canal or no disc at all)."""

    exit_code = 1
    meaning = "some image failed"


class JobError(TotalSpineSegError):
    """One job cannot run (a planning problem, a failed localizer)."""

    exit_code = 1
    meaning = "some image failed"


class InternalError(TotalSpineSegError):
    """A defect of the tool itself: an exception nobody expected (the message asks for a bug report)."""

    exit_code = 70  # EX_SOFTWARE
    meaning = "internal error (a bug: please report it with the -v output)"


ERROR_CLASSES: tuple[type[TotalSpineSegError], ...] = (
    UsageError, InputError, MissingInput, InvalidDataset, UnknownLevel, NothingSelected, CannotCreate,
    WeightsError, LabelingError, JobError, InternalError,
)


def exit_code_table(classes=ERROR_CLASSES) -> dict[int, str]:
    """{code: meaning} for these classes plus success, a failed image and an interrupt."""
    table: dict[int, list[str]] = {0: ["success"], SOME_IMAGE_FAILED: ["some image failed"]}
    for cls in classes:
        meanings = table.setdefault(cls.exit_code, [])
        if cls.meaning not in meanings:
            meanings.append(cls.meaning)
    table.setdefault(INTERRUPTED, ["interrupted (Ctrl-C)"])
    return {code: ", or ".join(table[code]) for code in sorted(table)}


def exit_codes_help(classes=ERROR_CLASSES) -> str:
    """The 'exit codes:' section of a --help epilog."""
    lines = [f"  {code:>3}  {meaning}" for code, meaning in exit_code_table(classes).items()]
    return "exit codes:\n" + "\n".join(lines) + "\n"
