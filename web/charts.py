"""Geometry of the neuron-correlation chart; the SVG itself is a Jinja template (autoescaped)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WIDTH = 640
LABEL_WIDTH = 110
BAR_HEIGHT = 16
GAP = 6
TOP_MARGIN = 24


@dataclass(frozen=True)
class Bar:
    neuron: int
    value: float
    x: float
    y: float
    width: float

    @property
    def positive(self) -> bool:
        return self.value >= 0


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    width: int
    height: int
    axis_x: float
    half: float


def top_neurons(correlations: np.ndarray, top: int) -> list[tuple[int, float]]:
    """Return the ``top`` most positive and ``top`` most negative neurons, highest first."""
    values = np.nan_to_num(np.asarray(correlations, dtype=np.float64))
    order = np.argsort(-values, kind="stable")
    chosen = [i for i in order[:top] if values[i] > 0]
    chosen += [i for i in order[::-1][:top][::-1] if values[i] < 0 and i not in chosen]
    return [(int(i), float(values[i])) for i in chosen]


def neuron_chart(correlations: np.ndarray, top: int = 10) -> Chart:
    """Lay out a diverging bar chart of the neurons most correlated with the class label."""
    pairs = top_neurons(correlations, top)
    half = (WIDTH - LABEL_WIDTH) / 2 - 40  # room for the value printed past the bar's end
    axis_x = LABEL_WIDTH + (WIDTH - LABEL_WIDTH) / 2
    bars = []
    for row, (neuron, value) in enumerate(pairs):
        length = abs(value) * half
        x = axis_x if value >= 0 else axis_x - length
        bars.append(Bar(neuron, value, x, TOP_MARGIN + row * (BAR_HEIGHT + GAP), length))
    height = TOP_MARGIN + max(len(bars), 1) * (BAR_HEIGHT + GAP) + 8
    return Chart(bars, WIDTH, height, axis_x, half)


def correlations_from_bytes(payload: bytes) -> np.ndarray:
    """Decode the stored float32 correlation vector."""
    return np.frombuffer(payload, dtype=np.float32)
