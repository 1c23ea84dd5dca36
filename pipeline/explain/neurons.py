"""Which neurons of the target layer go with the tumor label: streaming Pearson correlations.

Each scan's feature maps are averaged per channel (GAP) and turned into a distribution over
neurons (softmax), as in the original notebook's "neurons correlation"; across a job, each neuron's
value is correlated with the class label (1 = tumor, 0 = no tumor). A job is processed in batches,
possibly by different worker processes, so only sufficient statistics are kept: per-class counts,
sums and sums of squares in float64. Partial statistics merge in any order to the same result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from pipeline.io.npz import load_npz_bytes, npz_bytes

FORMAT = 1
CLASS_NAMES = ("no_tumor", "tumor")  # index = label
CONSTANT = 1e-12  # relative variance below which float64 sums cannot tell a neuron from a constant


def neuron_softmax(gap: np.ndarray) -> np.ndarray:
    """Return each scan's GAP vector as a softmax distribution over neurons.

    Args:
        gap: (N, C) global-average-pooled activations of the target layer.

    Returns:
        (N, C) float64 rows summing to 1.
    """
    gap = np.asarray(gap, dtype=np.float64)
    if gap.ndim != 2:
        raise ValueError(f"GAP vectors must form an (N, C) array, not one of shape {gap.shape}")
    shifted = np.exp(gap - gap.max(axis=1, keepdims=True))  # shifting by the max avoids overflow
    return shifted / shifted.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class NeuronRank:
    """One neuron's correlation with the tumor label and its mean value in each class."""

    neuron: int
    correlation: float
    mean_tumor: float | None
    mean_no_tumor: float | None


@dataclass(frozen=True)
class NeuronResult:
    """Per-neuron correlations with the label, the strongest of each sign, and class means.

    ``defined`` is False when the scans hold only one class: a correlation with a constant label
    does not exist, and every correlation is then reported as 0.
    """

    correlations: np.ndarray
    top_positive: list[NeuronRank]
    top_negative: list[NeuronRank]
    class_means: dict[str, np.ndarray]
    counts: dict[str, int]
    defined: bool
    n_scans: int

    def summary(self) -> dict:
        """Return the JSON-ready summary stored with a job (no per-neuron arrays)."""
        return {"n_scans": self.n_scans, "n_neurons": int(self.correlations.size),
                "counts": self.counts, "correlation_defined": self.defined,
                "top_positive": [asdict(r) for r in self.top_positive],
                "top_negative": [asdict(r) for r in self.top_negative]}


class NeuronAccumulator:
    """Streaming sufficient statistics of (neuron vector, label) pairs; see the module docstring."""

    def __init__(self, n_neurons: int) -> None:
        if n_neurons < 1:
            raise ValueError(f"a layer has at least one neuron, not {n_neurons}")
        self.counts = np.zeros(2, np.int64)
        self.sums = np.zeros((2, n_neurons), np.float64)
        self.squares = np.zeros((2, n_neurons), np.float64)

    @property
    def n_neurons(self) -> int:
        return self.sums.shape[1]

    @property
    def n_scans(self) -> int:
        return int(self.counts.sum())

    def update(self, vectors: np.ndarray, labels: np.ndarray) -> NeuronAccumulator:
        """Add a batch of neuron vectors (usually ``neuron_softmax(gap)``) with 0/1 labels."""
        vectors = np.asarray(vectors, dtype=np.float64)
        labels = np.asarray(labels)
        if vectors.ndim != 2 or vectors.shape[1] != self.n_neurons or labels.shape != vectors.shape[:1]:
            raise ValueError(f"expected ({len(labels)}, {self.n_neurons}) vectors for {len(labels)} "
                             f"labels, got vectors of shape {vectors.shape}")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("labels must be 1 (tumor) or 0 (no tumor)")
        if not np.isfinite(vectors).all():
            raise ValueError("neuron vectors contain NaN or infinite values")
        for label in (0, 1):
            rows = vectors[labels == label]
            self.counts[label] += len(rows)
            self.sums[label] += rows.sum(axis=0)
            self.squares[label] += np.square(rows).sum(axis=0)
        return self

    def merge(self, other: NeuronAccumulator) -> NeuronAccumulator:
        """Add another accumulator's statistics to this one and return this one."""
        if other.n_neurons != self.n_neurons:
            raise ValueError(f"cannot merge statistics of {other.n_neurons} neurons into "
                             f"statistics of {self.n_neurons}")
        self.counts += other.counts
        self.sums += other.sums
        self.squares += other.squares
        return self

    def to_bytes(self) -> bytes:
        """Return the statistics as ``.npz`` bytes, identical for identical statistics."""
        return npz_bytes(format=np.int64(FORMAT), counts=self.counts, sums=self.sums,
                         squares=self.squares)

    @classmethod
    def from_bytes(cls, data: bytes) -> NeuronAccumulator:
        """Rebuild an accumulator from ``to_bytes`` output."""
        try:
            arrays = load_npz_bytes(data)
            if int(arrays["format"]) != FORMAT:
                raise ValueError(f"format {int(arrays['format'])}, expected {FORMAT}")
            accumulator = cls(arrays["sums"].shape[1])
            accumulator.counts[:] = arrays["counts"]
            accumulator.sums[:] = arrays["sums"]
            accumulator.squares[:] = arrays["squares"]
        except (OSError, KeyError, ValueError, IndexError) as exc:
            raise ValueError(f"not saved neuron statistics: {exc}") from None
        return accumulator

    def correlations(self) -> np.ndarray:
        """Return each neuron's Pearson correlation with the label; 0 where it is undefined."""
        n_no, n_tumor = (float(c) for c in self.counts)
        n = n_no + n_tumor
        if n_no == 0 or n_tumor == 0:
            return np.zeros(self.n_neurons)
        total, squares = self.sums.sum(axis=0), self.squares.sum(axis=0)
        var_x = squares - total**2 / n
        covariance = self.sums[1] - total * n_tumor / n
        constant = var_x <= CONSTANT * np.maximum(squares, np.finfo(float).tiny)
        scale = np.sqrt(np.where(constant, 1.0, var_x) * (n_no * n_tumor / n))
        return np.where(constant, 0.0, np.clip(covariance / scale, -1.0, 1.0))

    def result(self, top: int = 10) -> NeuronResult:
        """Return the correlations, the ``top`` neurons of each sign, and the class means."""
        correlations = self.correlations()
        means = {name: self.sums[k] / self.counts[k] for k, name in enumerate(CLASS_NAMES)
                 if self.counts[k]}
        positive = [int(i) for i in np.argsort(-correlations, kind="stable")[:top] if correlations[i] > 0]
        negative = [int(i) for i in np.argsort(correlations, kind="stable")[:top] if correlations[i] < 0]
        rank = lambda i: NeuronRank(i, float(correlations[i]), _mean(means, "tumor", i),
                                    _mean(means, "no_tumor", i))
        return NeuronResult(correlations, [rank(i) for i in positive], [rank(i) for i in negative],
                            means, dict(zip(CLASS_NAMES, (int(c) for c in self.counts))),
                            bool(self.counts.all()), self.n_scans)


def _mean(means: dict[str, np.ndarray], name: str, neuron: int) -> float | None:
    return float(means[name][neuron]) if name in means else None
