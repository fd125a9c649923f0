"""Training tooling: nnU-Net datasets from labelled data, nnU-Net planning and training, release zips.

This package is for making models; nothing here is imported at inference time.

* ``dataset``: dataset.json, image/label pairs in a BIDS dataset, the step-1/step-2 cases on the network grid, the
  nnU-Net raw datasets (``prepare``), cross-validation splits that keep odd/even copies together.
* ``nnunet``: thin wrappers around nnU-Net's Python API: folders and variables, planning and preprocessing, plans
  overrides, splits files, training one fold.
* ``release``: release zips of trained models (checkpoints stripped to what inference needs), and unpacking them.
* ``demo_recipe``: the recipe of the bundled demo model; ``metrics``: evaluation scores (Dice, identification rate).
"""

from ..errors import TotalSpineSegError, WeightsError
from .dataset import (
    DATASET_IDS,
    DATASET_NAMES,
    DEFAULT_LABELS_PATTERN,
    alternate_disc_mask,
    create_dataset,
    dataset_json,
    expand_pattern,
    finish_dataset,
    grouped_splits,
    image_for_labels,
    prepare,
    step2_cases,
    to_network_grid,
    write_case,
)
from .nnunet import (
    CONFIGURATION,
    PLANNERS,
    TINY_OVERRIDE,
    NnUNetDirs,
    TrainSettings,
    apply_plans_override,
    plan_and_preprocess,
    train,
    write_splits,
)
from .release import CHECKPOINT_KEEP, export_release, strip_checkpoint, unpack_release

__all__ = [
    "CHECKPOINT_KEEP",
    "CONFIGURATION",
    "DATASET_IDS",
    "DATASET_NAMES",
    "DEFAULT_LABELS_PATTERN",
    "PLANNERS",
    "TINY_OVERRIDE",
    "NnUNetDirs",
    "TotalSpineSegError",
    "TrainSettings",
    "WeightsError",
    "alternate_disc_mask",
    "apply_plans_override",
    "create_dataset",
    "dataset_json",
    "expand_pattern",
    "export_release",
    "finish_dataset",
    "grouped_splits",
    "image_for_labels",
    "plan_and_preprocess",
    "prepare",
    "step2_cases",
    "strip_checkpoint",
    "to_network_grid",
    "train",
    "unpack_release",
    "write_case",
    "write_splits",
]
