"""The bundled lite model: in the package, never chosen silently, under its size limit, and no regression on a real
scan (floors well under the scores in its model card, so that noise does not fail the test)."""

import sys
from pathlib import Path

import pytest

from totalspineseg import weights

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SIZE_LIMIT_MB = 30


def test_lite_is_bundled_small_and_resolved_only_by_name(tmp_path, monkeypatch):
    paths = weights.resolve_model("lite")
    assert paths.release == "lite"
    folder = weights.RELEASES["lite"].bundled
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < SIZE_LIMIT_MB * 1e6
    assert (folder / "MODEL_CARD.md").is_file()
    monkeypatch.setenv("TOTALSPINESEG_DATA", str(tmp_path))
    with pytest.raises(weights.WeightsError, match="install"):
        weights.resolve_model("official")  # no fallback to a bundled model


@pytest.fixture(scope="module")
def lite_on(real_data):
    """Score the bundled lite model on a real scan by name (the networks are loaded once for the module)."""
    pytest.importorskip("nnunetv2")
    sys.path.insert(0, str(BENCHMARKS))
    import eval_real

    _, models = eval_real.load_models("lite", device="cpu")
    return lambda name: eval_real.evaluate_scan(eval_real.SCANS_BY_NAME[name], models, real_data)


@pytest.mark.slow
def test_lite_on_a_real_cervical_scan(real_data, lite_on):
    import eval_real

    result = lite_on("errsm_21/t2")
    assert result.error is None
    # The model card's score on this scan is 0.77 (the demo model: 0.00). The SCT levels are not right yet on
    # any real scan, so there is no floor for them; raise this test with the model.
    assert result.cord[eval_real.CORD_SAGITTAL_T2] >= CORD_FLOOR


@pytest.mark.slow
def test_lite_numbers_the_lumbar_discs_of_a_real_scan(real_data, lite_on):
    result = lite_on("IVD_11")
    assert result.error is None
    # Measured: L1-L2 ... L5-S all numbered right, mean Dice 0.70 (stage 1: 0/5, one level off).
    assert len(result.discs) == 5
    assert sum(d.right for d in result.discs) >= DISCS_RIGHT_FLOOR
    assert sum(d.dice for d in result.discs) / 5 >= DISC_DICE_FLOOR


CORD_FLOOR = 0.5
DISCS_RIGHT_FLOOR = 3
DISC_DICE_FLOOR = 0.4
