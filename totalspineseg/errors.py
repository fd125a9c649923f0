"""Exception hierarchy. Each class carries the BIDS-Apps exit code that `main()` turns it into.

Messages are one line and name the file and the problem.
"""

from __future__ import annotations


class TotalSpineSegError(Exception):
    """Base class for every error the tool raises on purpose."""

    exit_code = 1


class InputError(TotalSpineSegError, ValueError):
    """An input file is missing, unreadable, or not a usable 3-D/4-D NIfTI image."""

    exit_code = 65  # EX_DATAERR (BIDS-Apps spec): input data incorrect

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class LabelingError(TotalSpineSegError):
    """The class map cannot be labeled (for example no canal or no disc at all)."""

    exit_code = 1


class WeightsError(TotalSpineSegError):
    """Model weights are missing, corrupt or of the wrong layout."""

    exit_code = 1
