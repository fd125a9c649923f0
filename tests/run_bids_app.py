"""Run the BIDS-App in a child process with the ground-truth networks: `python run_bids_app.py BIDS OUT LEVEL ...`.

With TSS_TEST_DIE_BEFORE_MARKER=1 the process dies abruptly (no cleanup at all) right before it would
write its first completion marker: the state a killed job leaves behind.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bids_oracle import TruthProvider

from totalspineseg.bids_app import derivatives, main


def _die_before_marker():
    write_json = derivatives.write_json

    def dying(path, obj):
        if str(path).endswith(".done.json"):
            os._exit(137)
        return write_json(path, obj)

    derivatives.write_json = dying


if __name__ == "__main__":
    if os.environ.get("TSS_TEST_DIE_BEFORE_MARKER"):
        _die_before_marker()
    sys.exit(main(sys.argv[1:], models=TruthProvider(sys.argv[1])))
