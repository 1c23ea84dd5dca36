"""Synthetic head volumes, to check that NIfTI slices come out in the right orientation."""

from __future__ import annotations

import numpy as np

SHAPE = (40, 48, 30)  # R-L, A-P, S-I voxels of the canonical (RAS) volume


def head_volume() -> np.ndarray:
    """Return a RAS volume: an ellipsoid 'head' brighter toward right (+i), anterior (+j), superior."""
    i, j, k = np.mgrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    head = ((i - 20) / 16) ** 2 + ((j - 24) / 20) ** 2 + ((k - 15) / 12) ** 2 <= 1
    return np.where(head, 100.0 + i + j + 3 * k, 0.0).astype(np.float32)


# A tumor off the centre toward the right, anterior and superior: a flip or a transposition of
# the mask against its image would move it off the image's bright cube.
CUBE = (slice(24, 32), slice(28, 36), slice(16, 22))
AFFINES = {
    "ras": np.diag([1.0, 1.0, 1.0, 1.0]),
    "lps (DICOM-like, flipped)": np.diag([-1.0, -1.0, 1.0, 1.0]),
    "slices first (axial along the array's first axis)": np.array(
        [[0, 1.0, 0, 0], [0, 0, 1.0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]]),
    "oblique (10 degrees about S)": np.array(
        [[np.cos(0.17), -np.sin(0.17), 0, 0], [np.sin(0.17), np.cos(0.17), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
}


def tumor_case() -> tuple[np.ndarray, np.ndarray]:
    """Return a RAS head of even intensity with a bright cube, and its BraTS mask (labels 1, 2, 4)."""
    i, j, k = np.mgrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    head = ((i - 20) / 16) ** 2 + ((j - 24) / 20) ** 2 + ((k - 15) / 12) ** 2 <= 1
    image = np.where(head, 100.0, 0.0).astype(np.float32)
    image[CUBE] = 1000.0
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[CUBE] = 2  # oedema around
    mask[27:31, 31:35, 17:21] = 1  # necrotic core
    mask[28:30, 32:34, 18:20] = 4  # enhancing tumor
    return image, mask


def stored_as(affine: np.ndarray, volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the array and affine that store the RAS ``volume`` under ``affine``'s axis order."""
    import nibabel

    ornt = nibabel.orientations.io_orientation(affine)
    data = nibabel.orientations.apply_orientation(
        volume, nibabel.orientations.ornt_transform(nibabel.orientations.axcodes2ornt("RAS"), ornt))
    return data, affine


def save_volume(path, volume: np.ndarray, affine: np.ndarray | str = "ras"):
    """Save the RAS ``volume`` at ``path`` stored under ``affine`` (or an ``AFFINES`` name)."""
    import nibabel

    affine = AFFINES[affine] if isinstance(affine, str) else affine
    data, affine = stored_as(affine, volume)
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(np.ascontiguousarray(data), affine), str(path))
    return path


def save_case(folder, name: str = "case", affine: np.ndarray | str = "ras",
              seg: str | None = "_seg") -> tuple:
    """Write ``tumor_case`` as ``name.nii.gz`` and, unless ``seg`` is None, ``name + seg`` + ``.nii.gz``."""
    image, mask = tumor_case()
    path = save_volume(folder / f"{name}.nii.gz", image, affine)
    mask_path = None if seg is None else save_volume(folder / f"{name}{seg}.nii.gz", mask, affine)
    return path, mask_path
