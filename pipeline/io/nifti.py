"""Read NIfTI volumes (``.nii``, ``.nii.gz``) into display-ready axial slices with nibabel.

One volume is one series: its axial slices, found from the affine (not assumed from the array's
order), each become one scan, numbered by their index from inferior to superior. A slice is
shown as radiologists view an axial image: anterior at the top, the patient's right on the
left. Intensities are windowed once for the whole volume (its 0.5th to 99.5th percentile inside
the head), so slices of one volume compare. Slices that hold almost no head (the first and last
of a volume) are left out. A 4-D volume gives its first volume. The header's free-text fields
are never read into the scan's metadata. ``read_volume``, ``head_frames`` and ``axial_view`` give
the same orientation to other volumes of a case (a tumor mask beside its image).
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np

from pipeline.io.pixels import Scan, ScanError, check_pixel_count, scale_to_uint8

NIFTI_SUFFIXES = (".nii", ".nii.gz")
GZIP_MAGIC = b"\x1f\x8b"
HEAD_SHARE = 0.02  # a slice with less of its area inside the head than this is left out
WINDOW = (0.5, 99.5)  # percentiles of the head's voxels shown black and white


def is_nifti_name(name: str) -> bool:
    """Tell whether a file name has a NIfTI suffix (any case)."""
    return name.lower().endswith(NIFTI_SUFFIXES)


def looks_like_nifti(data: bytes) -> bool:
    """Tell whether bytes hold a NIfTI-1 or NIfTI-2 header (its magic), gzipped or not."""
    head = _head(data)  # single-file volumes only: a .hdr/.img pair keeps its pixels elsewhere
    return head[344:348] == b"n+1\0" or head[4:8] == b"n+2\0"


def read_nifti(data: bytes) -> list[Scan]:
    """Return a volume's axial slices inside the head, inferior to superior.

    Raises:
        ScanError: not a NIfTI volume, damaged, or not 3-D (or 4-D).
    """
    import nibabel

    image, canonical, volume = _load(data)
    check_pixel_count(volume.shape[0], volume.shape[1])
    info = {"format": "NIfTI", "orientation": "".join(nibabel.aff2axcodes(image.affine)),
            "voxel_size": "x".join(f"{z:g}" for z in canonical.header.get_zooms()[:3]),
            "slices": str(volume.shape[2])}
    return [Scan(pixels=pixels, frame=k, info={**info, "slice": str(k)})
            for k, pixels in _axial_slices(volume)]


def read_volume(path: str | os.PathLike) -> np.ndarray:
    """Return a NIfTI file's voxels in canonical axes (R, A, S), as ``read_nifti`` orients them.

    A 4-D file gives its first volume. ``axial_view`` turns ``volume[:, :, frame]`` into the
    pixels of that frame's scan, so a mask volume read here lines up with its image's slices.

    Raises:
        ScanError: the file cannot be read, is not NIfTI, is damaged, or is not 3-D (or 4-D).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ScanError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not looks_like_nifti(data):
        raise ScanError(f"{path} is not a NIfTI volume")
    return _load(data)[2]


def read_mask_volume(path: str | os.PathLike, image: str | os.PathLike | None = None,
                     shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Return a mask volume as booleans (voxel > 0, so every BraTS label) in canonical axes.

    Args:
        path: the mask volume (a 4-D one gives its first volume).
        image: the image volume it outlines, named in errors.
        shape: that image's canonical shape (``read_volume(image).shape``), checked when given.

    Raises:
        ScanError: the mask cannot be read, or its shape differs from the image's; the message
            names both files.
    """
    try:
        mask = read_volume(path) > 0
    except ScanError as exc:
        raise ScanError(f"the mask volume {path} cannot be read: {exc}") from exc
    if shape is not None and mask.shape != tuple(shape):
        raise ScanError(f"the mask volume {path} has shape {mask.shape} but its image {image} has "
                        f"{tuple(shape)} (both in RAS axes); a mask must match its image voxel "
                        "for voxel")
    return mask


def head_frames(volume: np.ndarray) -> list[int]:
    """Return the frames ``read_nifti`` keeps of a canonical volume: those showing the head."""
    return _head_slices(volume)[2]


def axial_view(plane: np.ndarray) -> np.ndarray:
    """Return a canonical (R, A) axial plane as shown: anterior up, patient's right on the left."""
    return plane[::-1, ::-1].T


def _load(data: bytes):
    """Return (stored image, canonical image, canonical 3-D float32 voxels) of NIfTI bytes."""
    import nibabel  # only once a volume turns up

    try:
        raw = gzip.decompress(data) if data.startswith(GZIP_MAGIC) else data
        image = nibabel.Nifti1Image.from_bytes(raw) if raw[344:348] == b"n+1\0" else \
            nibabel.Nifti2Image.from_bytes(raw)
        canonical = nibabel.as_closest_canonical(image)  # axes R, A, S, whatever was stored
        volume = np.asarray(canonical.dataobj, dtype=np.float32)
    except (OSError, EOFError, ValueError, nibabel.filebasedimages.ImageFileError) as exc:
        raise ScanError(f"damaged NIfTI: the volume cannot be read ({exc})") from exc
    return image, canonical, _first_volume(volume)


def _head(data: bytes) -> bytes:
    if not data.startswith(GZIP_MAGIC):
        return data[:348]
    try:
        return gzip.GzipFile(fileobj=io.BytesIO(data)).read(348)
    except (OSError, EOFError):
        return b""


def _first_volume(volume: np.ndarray) -> np.ndarray:
    while volume.ndim > 3 and volume.shape[-1] >= 1:
        volume = volume[..., 0]
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise ScanError(f"not a volume: the NIfTI file holds an array of shape {volume.shape}; "
                        "tumorlens reads 3-D volumes (and the first volume of a 4-D one)")
    return volume


def _head_slices(volume: np.ndarray):
    """Return the finite voxels, the head's voxels and the frames with enough head to be kept."""
    finite = np.nan_to_num(volume, nan=0.0, posinf=0.0, neginf=0.0)
    inside = finite > float(finite.min())
    shares = inside.mean(axis=(0, 1))
    return finite, inside, [k for k, share in enumerate(shares) if share >= HEAD_SHARE]


def _axial_slices(volume: np.ndarray):
    """Yield (index, uint8 slice) of the slices that show the head, windowed for the volume."""
    finite, inside, kept = _head_slices(volume)
    if not kept:
        return
    lo, hi = np.percentile(finite[inside], WINDOW)
    for k in kept:
        yield k, scale_to_uint8(axial_view(finite[:, :, k]), lo, hi)
