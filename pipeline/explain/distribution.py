"""Whether a scan lies inside the model's experience: its pooled neuron vector against training.

Fitted once, on the TRAIN scans a model learned from: the mean and a shrunk covariance
(Ledoit-Wolf, well conditioned with fewer scans than neurons) of the target layer's GAP
vectors, the very vectors the analysis yields for every scan. A scan's Mahalanobis distance
to that mean, divided by the distance that only 1 % of the VALIDATION scans exceed, is its
``ood_score``: above 1 the scan is outside what the model was trained on. The statistics are
shipped beside the model (``"in_distribution"`` in model.json) and cost one small matrix
product per batch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pipeline.io.npz import load_npz_bytes, npz_bytes

LIMIT_QUANTILE = 0.99  # the share of VALIDATION scans the limit keeps inside
FILE_NAME = "in_distribution.npz"


@dataclasses.dataclass(frozen=True)
class Distribution:
    """The training distribution of a model's pooled neuron vectors, and its distance limit."""

    mean: np.ndarray  # (C,) float64
    precision: np.ndarray  # (C, C) float64: the inverse of the shrunk covariance
    limit: float  # the Mahalanobis distance LIMIT_QUANTILE of VALIDATION stays within
    fitted_on: int  # TRAIN vectors
    limit_from: int  # VALIDATION vectors

    def distances(self, vectors: np.ndarray) -> np.ndarray:
        """Return each (C,) vector's Mahalanobis distance to the training mean."""
        centred = np.asarray(vectors, dtype=np.float64) - self.mean
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", centred, self.precision, centred), 0))

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """Return (N,) float32 distances over the limit: above 1, outside the model's experience."""
        return (self.distances(vectors) / self.limit).astype(np.float32)

    def to_bytes(self) -> bytes:
        return npz_bytes(None, mean=self.mean, precision=self.precision,
                         counts=np.array([self.fitted_on, self.limit_from]),
                         limit=np.array([self.limit]))

    @classmethod
    def from_bytes(cls, data: bytes) -> Distribution:
        arrays = load_npz_bytes(data)
        fitted_on, limit_from = (int(n) for n in arrays["counts"])
        return cls(arrays["mean"], arrays["precision"], float(arrays["limit"][0]), fitted_on, limit_from)


def fit_distribution(train: np.ndarray, validation: np.ndarray,
                     quantile: float = LIMIT_QUANTILE) -> Distribution:
    """Fit the distribution of TRAIN vectors and set its limit on VALIDATION.

    Args:
        train: (N, C) pooled neuron vectors of the scans the model was trained on.
        validation: (M, C) vectors of held-out scans of the same domains.
        quantile: the share of VALIDATION scans the limit keeps inside.

    Returns:
        The fitted distribution.

    Raises:
        ValueError: too few vectors to fit, or vectors of different widths.
    """
    from sklearn.covariance import LedoitWolf  # only here: scanning never pays for it

    train, validation = np.asarray(train, np.float64), np.asarray(validation, np.float64)
    if train.ndim != 2 or len(train) < 2 or validation.ndim != 2 or len(validation) < 1 \
            or train.shape[1] != validation.shape[1]:
        raise ValueError(f"need (N, C) TRAIN and (M, C) VALIDATION vectors of one width, N >= 2 "
                         f"(got {train.shape} and {validation.shape})")
    shrunk = LedoitWolf().fit(train)
    partial = Distribution(shrunk.location_, shrunk.precision_, 1.0, len(train), len(validation))
    limit = float(np.quantile(partial.distances(validation), quantile))
    return dataclasses.replace(partial, limit=max(limit, np.finfo(np.float32).tiny))


def load_distribution(path: str | Path) -> Distribution:
    """Read a model's in-distribution statistics."""
    return Distribution.from_bytes(Path(path).read_bytes())
