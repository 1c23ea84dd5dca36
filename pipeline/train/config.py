"""What decides a training run: the settings stored in the model card, and the class names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.train.augment import GEOMETRIC

CLASS_NAMES = ["no_tumor", "tumor"]


@dataclass
class TrainConfig:
    """Everything that decides a training run; stored in the model card."""

    arch: str = "lens"
    weights: str | None = None
    input_size: int = 224
    epochs: int = 40
    batch_size: int = 32
    seed: int = 0
    augment: Sequence[str] = GEOMETRIC
    learning_rate: float = 1e-3
    patience: int = 8
    width: int = 24
    mask_weight: float = 0.0  # > 0 guides the CAM with tumor outlines (pipeline.train.guidance)
    extra_domains: Sequence[str] = field(default_factory=list)
    name: str | None = None
    init: str | None = None  # start from this trained model's weights (fine-tuning)
    schedule: str = "plateau"  # "plateau" (cut on a VALIDATION plateau) or "cosine" (SCHEDULES)
    target_sensitivity: float | None = None  # choose model.json's threshold on VALIDATION for it


SCHEDULES = ("plateau", "cosine")
