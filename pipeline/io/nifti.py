"""Read NIfTI volumes (``.nii``, ``.nii.gz``) into display-ready axial slices with nibabel.

One volume is one series: its axial slices, found from the affine (not assumed from the array's
order), each become one scan, numbered by their index from inferior to superior. A slice is
shown as radiologists view an axial image: anterior at the top, the patient's right on the
left. Intensities are windowed once for the whole volume (its 0.5th to 99.5th percentile inside
the head), so slices of one volume compare. Slices that hold almost no head (the first and last
of a volume) are left out. A 4-D volume gives its first volume. The header's free-text fields
are never read into the scan's metadata.
"""

from __future__ import annotations

import gzip
import io

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
    import nibabel  # only once a volume turns up

    try:
        raw = gzip.decompress(data) if data.startswith(GZIP_MAGIC) else data
        image = nibabel.Nifti1Image.from_bytes(raw) if raw[344:348] == b"n+1\0" else \
            nibabel.Nifti2Image.from_bytes(raw)
        canonical = nibabel.as_closest_canonical(image)  # axes R, A, S, whatever was stored
        volume = np.asarray(canonical.dataobj, dtype=np.float32)
    except (OSError, EOFError, ValueError, nibabel.filebasedimages.ImageFileError) as exc:
        raise ScanError(f"damaged NIfTI: the volume cannot be read ({exc})") from exc
    volume = _first_volume(volume)
    check_pixel_count(volume.shape[0], volume.shape[1])
    info = {"format": "NIfTI", "orientation": "".join(nibabel.aff2axcodes(image.affine)),
            "voxel_size": "x".join(f"{z:g}" for z in canonical.header.get_zooms()[:3]),
            "slices": str(volume.shape[2])}
    return [Scan(pixels=pixels, frame=k, info={**info, "slice": str(k)})
            for k, pixels in _axial_slices(volume)]


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


def _axial_slices(volume: np.ndarray):
    """Yield (index, uint8 slice) of the slices that show the head, windowed for the volume."""
    finite = np.nan_to_num(volume, nan=0.0, posinf=0.0, neginf=0.0)
    background = float(finite.min())
    inside = finite > background
    if not inside.any():
        return
    lo, hi = np.percentile(finite[inside], WINDOW)
    for k in range(volume.shape[2]):
        if inside[:, :, k].mean() < HEAD_SHARE:
            continue
        # Canonical axes are (R, A): anterior up and the patient's right on the left.
        yield k, scale_to_uint8(finite[::-1, ::-1, k].T, lo, hi)
