"""An "oracle" stand-in for the two networks: it answers with a phantom's ground truth.

It lets the real pipeline, CLI and BIDS-App run end to end with exact expectations and no network. It looks
the truth up in world coordinates, so it follows whatever grid and crop the pipeline hands it.
"""

from __future__ import annotations

import numpy as np

from totalspineseg import labels as L
from totalspineseg import resample
from totalspineseg.pipeline import Models
from totalspineseg.predictor import Prediction


class OracleModel:
    def __init__(self, truth: np.ndarray, truth_affine: np.ndarray, step: int):
        self.truth = truth
        self.truth_affine = truth_affine
        self.step = step
        self.device = "cpu"

    def predict(self, image_channels, spacing=(1.0, 1.0, 1.0), return_probabilities=False, progress=False,
                affine=None):
        if affine is None:
            raise ValueError("the oracle needs the affine of its input")
        shape = image_channels.shape[1:]
        final = resample.resample_to_grid(self.truth, self.truth_affine, shape, affine, "labels")
        classes = L.final_to_step1(final) if self.step == 1 else L.final_to_step2(final)
        probs = None
        if return_probabilities:
            wanted = return_probabilities if return_probabilities is not True else range(1, 10)
            probs = {}
            for v in wanted:
                if v == int(L.Step1.CANAL):
                    probs[v] = np.isin(classes, [L.Step1.CANAL, L.Step1.CORD]).astype(np.float32)
                else:
                    probs[v] = (classes == v).astype(np.float32)
        return Prediction(labels=classes.astype(np.uint8), probabilities=probs)


def oracle_models(truth: np.ndarray, truth_affine: np.ndarray, tile_step: float = 0.5) -> Models:
    """`tile_step` is only recorded (the oracle has no sliding window), as a real run records it."""
    return Models(OracleModel(truth, truth_affine, 1), OracleModel(truth, truth_affine, 2), release="oracle",
                  sha256={}, device="cpu", tile_step=tile_step)
