"""``.npz`` archives whose bytes depend only on the arrays.

``np.savez`` stamps every zip entry with the current time, so the same arrays saved twice give
different bytes; here each entry carries a fixed date.

Archives are laid out here as a plain zip, which ``np.load`` and ``zipfile`` read; compressed
entries are deflated by libdeflate (through imagecodecs, which releases the GIL): the standard
library's zlib took 2.5-3x as long for the same size (benchmarks/bench_overlay.py).

Archives are read with ``load_arrays``, which parses one header at a time in the process: numpy
parses each ``.npy`` header with ``ast.literal_eval``, and CPython 3.11's AST constructor keeps its
recursion depth in shared state, so two threads parsing at once can fail with "SystemError: AST
constructor recursion depth mismatch" (CPython gh-106905). The web draws overlays in threads and
met it under parallel clients; the lock costs microseconds against a drawing's milliseconds.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib

import imagecodecs
import numpy as np

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry
_DOS_TIME, _DOS_DATE = 0, (ZIP_DATE[0] - 1980) << 9 | ZIP_DATE[1] << 5 | ZIP_DATE[2]
_ZIP_VERSION, _STORED, _DEFLATED = 20, 0, 8
_PARSING = threading.Lock()  # one .npy header parsed at a time (the module docstring says why)


def npz_bytes(compresslevel: int | None = None, **arrays: np.ndarray) -> bytes:
    """Return arrays as ``.npz`` bytes that ``np.load`` reads, identical for identical arrays.

    Args:
        compresslevel: deflate level 1-12 (libdeflate's), or None to store uncompressed.
        **arrays: the arrays by name.

    Returns:
        The archive's bytes.
    """
    return _zip({f"{name}.npy": _npy(array) for name, array in arrays.items()}, compresslevel)


def _npy(array: np.ndarray) -> bytes:
    payload = io.BytesIO()
    np.lib.format.write_array(payload, np.asarray(array), allow_pickle=False)
    return payload.getvalue()


def _zip(entries: dict[str, bytes], level: int | None) -> bytes:
    """Return a zip archive of ``entries``, deflated at ``level`` or stored (PKWARE APPNOTE 4.3, no zip64)."""
    parts, directory, offset = [], [], 0
    method = _STORED if level is None else _DEFLATED
    for name, data in entries.items():
        packed = data if level is None else imagecodecs.deflate_encode(data, level=level, raw=True)
        fields = (_ZIP_VERSION, 0, method, _DOS_TIME, _DOS_DATE, zlib.crc32(data), len(packed),
                  len(data), len(name.encode()))
        local = struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields, 0) + name.encode()
        directory.append(struct.pack("<IH", 0x02014B50, _ZIP_VERSION)
                         + struct.pack("<HHHHHIIIHHHHHII", *fields, 0, 0, 0, 0, 0, offset)
                         + name.encode())
        parts += [local, packed]
        offset += len(local) + len(packed)
    central = b"".join(directory)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central),
                      offset, 0)
    return b"".join((*parts, central, end))


def load_arrays(source: str | os.PathLike) -> dict[str, np.ndarray]:
    """Return the arrays of an ``.npz`` file by name (no pickled objects), safe from any thread."""
    with _PARSING, np.load(source, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def load_npz_bytes(data: bytes) -> dict[str, np.ndarray]:
    """Return the arrays of ``.npz`` bytes by name (no pickled objects are loaded)."""
    return load_arrays(io.BytesIO(data))
