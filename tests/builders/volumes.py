"""Synthetic head volumes, to check that NIfTI slices come out in the right orientation."""

from __future__ import annotations

import numpy as np

SHAPE = (40, 48, 30)  # R-L, A-P, S-I voxels of the canonical (RAS) volume


def head_volume() -> np.ndarray:
    """Return a RAS volume: an ellipsoid 'head' brighter toward right (+i), anterior (+j), superior."""
    i, j, k = np.mgrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    head = ((i - 20) / 16) ** 2 + ((j - 24) / 20) ** 2 + ((k - 15) / 12) ** 2 <= 1
    return np.where(head, 100.0 + i + j + 3 * k, 0.0).astype(np.float32)
