"""bf16 autocast against fp32 with the demo model: the same numbering and Dice >= 0.99 per structure."""

from __future__ import annotations

import pytest

from totalspineseg import volume, weights
from totalspineseg.pipeline import Models, PipelineOptions, segment
from totalspineseg.synth import phantom
from totalspineseg.training import metrics


@pytest.mark.slow  # bf16 is emulated (much slower) on CPUs without AMX/AVX512-BF16
def test_bf16_agrees_with_fp32_on_a_small_phantom():
    models = Models.load(weights.resolve_model("demo"), "cpu", precision="fp32")
    ph = phantom.make_phantom(seed=10004, fov="cervical", orientation="PSR", voxel=(0.9, 0.9, 3.0), contrast="T2w")
    image = volume.Volume(ph.image, ph.affine)
    results = {}
    for precision in ("fp32", "bf16"):
        for model in (models.step1, models.step2):
            model.precision = precision
        models.precision = precision
        results[precision] = segment(image, models, None, PipelineOptions(progress=False))
    ref, new = results["fp32"].final.step2, results["bf16"].final.step2
    assert results["bf16"].precision == "bf16"
    assert metrics.present_labels(new) == metrics.present_labels(ref)
    dice = metrics.dice_per_label(new, ref, metrics.present_labels(ref))
    assert min(dice.values()) >= 0.99, {k: round(v, 4) for k, v in dice.items() if v < 0.99}
    crop_ref, crop_new = results["fp32"].crop_grid, results["bf16"].crop_grid
    assert crop_ref.shape == crop_new.shape or max(abs(a - b) for a, b in zip(crop_ref.shape, crop_new.shape,
                                                                               strict=True)) <= 1
