"""Series-level results from slice results: is there a tumor in this series, and on which slices.

A series is one sequence of slice tumor probabilities in anatomical order. Its tumor probability
comes from one of several aggregations (``AGGREGATIONS``, picked by name); the slices called tumor
are the contiguous runs at or above the model's threshold. ``max``, ``top-k-mean`` and the
noisy-ORs ignore slice order; ``consecutive`` and the runs depend on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# The product's series rule: top-k mean over three slices. k=2 and k=3 tie on the LGG VALIDATION
# patients (benchmarks/bench_series.py); 3 is the smallest k at which one slice alone, however
# sure, cannot call a series at a threshold of 0.5 (its mean is at most 1/3): a call needs
# evidence on two slices or more. (TEST played no part in the choice.)
DEFAULT_K = 3
DEFAULT_THRESHOLD = 0.5
DEFAULT_AGGREGATION = "top-k-mean"

Run = tuple[int, int]  # first and last slice index of a run, both inclusive


@dataclass(frozen=True)
class SeriesResult:
    """What one series amounts to: its probability, the call, and where the tumor slices lie."""

    aggregation: str
    k: int
    threshold: float
    probability: float  # the series' tumor probability by ``aggregation``
    tumor: bool  # probability >= threshold
    strongest_slice: int  # index of the slice with the highest probability (the first on ties)
    runs: tuple[Run, ...]  # every run of slices at or above the threshold, in slice order
    longest_run: Run | None  # the longest run (ties: the higher peak, then the earlier); None if none
    slices: int

    def to_json(self) -> dict:
        """Return the result as a JSON-ready dict (runs as [first, last] lists)."""
        return {"aggregation": self.aggregation, "k": self.k, "threshold": self.threshold,
                "probability": self.probability, "tumor": self.tumor,
                "strongest_slice": self.strongest_slice, "runs": [list(r) for r in self.runs],
                "longest_run": list(self.longest_run) if self.longest_run else None,
                "slices": self.slices}


def as_probabilities(probabilities: Sequence[float] | np.ndarray) -> np.ndarray:
    """Return a series' slice probabilities as a checked float64 (N,) array.

    Raises:
        ValueError: an empty series, not one dimension, or values that are NaN or outside [0, 1].
    """
    values = np.asarray(probabilities, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"a series is one sequence of slice probabilities, got shape {values.shape}")
    if values.size == 0:
        raise ValueError("the series is empty: there are no slice probabilities to aggregate")
    if not np.all((values >= 0) & (values <= 1)):  # NaN fails both comparisons
        bad = values[~((values >= 0) & (values <= 1))][0]
        raise ValueError(f"slice probabilities must lie in [0, 1], got {bad}")
    return values


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Return the ``k`` highest values (all of them when the series is shorter), highest first."""
    return np.sort(values)[::-1][:k]


def max_probability(values: np.ndarray, k: int) -> float:
    """The highest slice probability (``k`` unused): one confident slice is enough."""
    return float(values.max())


def top_k_mean(values: np.ndarray, k: int) -> float:
    """The mean of the ``k`` highest slice probabilities: one spurious slice is diluted."""
    return float(top_k(values, k).mean())


def noisy_or(values: np.ndarray, k: int) -> float:
    """1 - prod(1 - p) over all slices (``k`` unused); saturates towards 1 on long series."""
    return float(1.0 - np.prod(1.0 - values))


def noisy_or_top_k(values: np.ndarray, k: int) -> float:
    """Noisy-OR over the ``k`` highest slices only, so series length alone cannot saturate it."""
    return float(1.0 - np.prod(1.0 - top_k(values, k)))


def consecutive(values: np.ndarray, k: int) -> float:
    """The best level that ``k`` consecutive slices all reach: max over windows of the window min.

    It is at or above a threshold exactly when some ``k`` consecutive slices are; a series shorter
    than ``k`` is one window.
    """
    k = min(k, values.size)
    windows = np.lib.stride_tricks.sliding_window_view(values, k)
    return float(windows.min(axis=1).max())


Aggregation = Callable[[np.ndarray, int], float]
AGGREGATIONS: dict[str, Aggregation] = {
    "max": max_probability,
    "top-k-mean": top_k_mean,
    "noisy-or": noisy_or,
    "noisy-or-top-k": noisy_or_top_k,
    "consecutive": consecutive,
}
USES_K = frozenset({"top-k-mean", "noisy-or-top-k", "consecutive"})


def aggregation(name: str) -> Aggregation:
    """Return the aggregation registered as ``name``.

    Raises:
        ValueError: no aggregation of that name; the message lists the names.
    """
    try:
        return AGGREGATIONS[name]
    except KeyError:
        raise ValueError(f'unknown aggregation "{name}"; choose one of '
                         f'{", ".join(AGGREGATIONS)}') from None


def aggregate(probabilities: Sequence[float] | np.ndarray, name: str = DEFAULT_AGGREGATION,
              k: int = DEFAULT_K) -> float:
    """Return a series' tumor probability by the aggregation ``name``.

    Args:
        probabilities: the slices' tumor probabilities (in anatomical order for ``consecutive``).
        name: a key of ``AGGREGATIONS``.
        k: slices taken by ``top-k-mean``, ``noisy-or-top-k`` and ``consecutive`` (at least 1).

    Returns:
        The series' tumor probability in [0, 1].

    Raises:
        ValueError: an unknown name, k < 1, or probabilities ``as_probabilities`` refuses.
    """
    function = aggregation(name)
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a whole number of slices, at least 1, not {k}")
    return function(as_probabilities(probabilities), int(k))


def tumor_runs(probabilities: Sequence[float] | np.ndarray,
               threshold: float = DEFAULT_THRESHOLD) -> tuple[Run, ...]:
    """Return every run of consecutive slices at or above ``threshold`` as (first, last), inclusive.

    Args:
        probabilities: the slices' tumor probabilities in anatomical order.
        threshold: the model's operating point.

    Returns:
        The runs in slice order; empty when no slice reaches the threshold.
    """
    called = as_probabilities(probabilities) >= _checked_threshold(threshold)
    edges = np.diff(np.concatenate([[0], called.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return tuple((int(a), int(b)) for a, b in zip(starts, stops))


def longest_run(runs: Sequence[Run], probabilities: Sequence[float] | np.ndarray) -> Run | None:
    """Return the longest run; between runs of one length, the higher peak, then the earlier."""
    if not runs:
        return None
    values = as_probabilities(probabilities)
    return max(runs, key=lambda r: (r[1] - r[0], values[r[0]:r[1] + 1].max(), -r[0]))


def summarise_series(probabilities: Sequence[float] | np.ndarray,
                     threshold: float = DEFAULT_THRESHOLD, name: str = DEFAULT_AGGREGATION,
                     k: int = DEFAULT_K) -> SeriesResult:
    """Return one series' result: probability, call, strongest slice and tumor runs.

    Args:
        probabilities: the slices' tumor probabilities in anatomical order.
        threshold: the model's operating point (``ModelSpec.decision_threshold``), used both for
            the series call and for the runs of tumor slices.
        name: the aggregation, a key of ``AGGREGATIONS``.
        k: slices taken by the aggregations that use it (``USES_K``).

    Returns:
        A ``SeriesResult``.

    Raises:
        ValueError: an empty or invalid series, an unknown aggregation, k < 1, or a threshold
            outside (0, 1].
    """
    values = as_probabilities(probabilities)
    threshold = _checked_threshold(threshold)
    probability = aggregate(values, name, k)
    runs = tumor_runs(values, threshold)
    return SeriesResult(aggregation=name, k=int(k), threshold=threshold, probability=probability,
                        tumor=probability >= threshold, strongest_slice=int(np.argmax(values)),
                        runs=runs, longest_run=longest_run(runs, values), slices=int(values.size))


def _checked_threshold(threshold: float) -> float:
    if not 0 < threshold <= 1:  # NaN fails too
        raise ValueError(f"the threshold must lie in (0, 1], not {threshold}")
    return float(threshold)
