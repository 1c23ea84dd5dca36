"""``.npz`` archives whose bytes depend only on the arrays.

``np.savez`` stamps every zip entry with the current time, so the same arrays saved twice give
different bytes; here each entry carries a fixed date.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry


def npz_bytes(compresslevel: int | None = None, **arrays: np.ndarray) -> bytes:
    """Return arrays as ``.npz`` bytes that ``np.load`` reads, identical for identical arrays.

    Args:
        compresslevel: deflate level 0-9, or None to store uncompressed.
        **arrays: the arrays by name.

    Returns:
        The archive's bytes.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, array in arrays.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE)
            entry.compress_type = zipfile.ZIP_STORED if compresslevel is None else zipfile.ZIP_DEFLATED
            payload = io.BytesIO()
            np.lib.format.write_array(payload, np.asarray(array), allow_pickle=False)
            archive.writestr(entry, payload.getvalue(), compresslevel=compresslevel)
    return buffer.getvalue()


def load_npz_bytes(data: bytes) -> dict[str, np.ndarray]:
    """Return the arrays of ``.npz`` bytes by name (no pickled objects are loaded)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}
