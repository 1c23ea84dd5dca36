"""Exact and near-duplicate images: content hashes, mirror-aware difference hashes, groups.

Collections such as Br35H repeat one scan many times with another contrast, crop, size or as a
mirror image. Two images count as the same when their 16x16 difference hashes differ in at most
``MAX_DISTANCE`` of 256 bits, comparing one image with the other and with its mirror image; groups
are the transitive closure of that relation (connected components).

The limit was measured on the shared data (Br35H: 1500 ``yes``, 1500 ``no``; LGG FLAIR: 2746 slices
of 110 patients) by ``benchmarks/measure_near_duplicates.py``. At 20 bits no Br35H ``yes`` image joins
a ``no`` image (one does by 44), no two LGG patients join (five groups do by 28),
and the count of Br35H groups has levelled off (329 ``yes``, 220 ``no``; 307 and 194 at 40).
Without the mirror comparison 559 and 363 groups remain: mirrored copies stay apart. A DCT
perceptual hash is not used: within 8 of its 64 bits it already joins ``yes`` to ``no`` images.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageOps
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

HASH_SIZE = 16
MAX_DISTANCE = 20
SERIAL_BELOW = 64  # starting worker processes costs more than hashing this many images

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Fingerprint:
    """Content hash and packed difference hashes of one file; ``error`` when it is no image."""

    sha256: str
    dhash: bytes | None = None
    mirrored: bytes | None = None
    error: str | None = None


def fingerprint(path: Path) -> Fingerprint:
    """Return the sha256 and the plain and mirrored difference hashes of one image file.

    Args:
        path: an image file Pillow can read.

    Returns:
        The fingerprint; for a file that is no readable image, only ``sha256`` and ``error``.
    """
    data = Path(path).read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as image:
            # A 17x16 hash needs no more than a JPEG decoded at 1/2..1/8 scale, which is cheaper.
            image.draft("L", (8 * HASH_SIZE, 8 * HASH_SIZE))
            gray = image.convert("L")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        return Fingerprint(sha256, error=f"not a readable image ({exc})")
    plain = imagehash.dhash(gray, HASH_SIZE).hash
    mirrored = imagehash.dhash(ImageOps.mirror(gray), HASH_SIZE).hash
    return Fingerprint(sha256, np.packbits(plain).tobytes(), np.packbits(mirrored).tobytes())


def fingerprint_all(paths: Sequence[Path], workers: int | None = None,
                    progress: Progress | None = None) -> list[Fingerprint]:
    """Fingerprint files in worker processes, keeping the order of ``paths``.

    Args:
        paths: the files.
        workers: processes to use (default: one per core; small batches run in this process).
        progress: called with (done, total) after each file.

    Returns:
        One fingerprint per path, in order.
    """
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(paths) < SERIAL_BELOW:
        return _collect(map(fingerprint, paths), len(paths), progress)
    with ProcessPoolExecutor(workers) as pool:
        chunk = max(1, len(paths) // (workers * 16))
        return _collect(pool.map(fingerprint, paths, chunksize=chunk), len(paths), progress)


def _collect(results, total: int, progress: Progress | None) -> list[Fingerprint]:
    collected = []
    for result in results:
        collected.append(result)
        if progress is not None:
            progress(len(collected), total)
    return collected


def hash_arrays(prints: Sequence[Fingerprint]) -> tuple[np.ndarray, np.ndarray]:
    """Return the packed plain and mirrored hashes of readable fingerprints as (n, bytes) arrays."""
    shape = (len(prints), -1)
    plain = np.frombuffer(b"".join(f.dhash for f in prints), np.uint8).reshape(shape)
    mirrored = np.frombuffer(b"".join(f.mirrored for f in prints), np.uint8).reshape(shape)
    return plain, mirrored


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the (len(a), len(b)) Hamming distances between rows of packed uint64 hashes."""
    return np.bitwise_count(a[:, None, :] ^ b[None, :, :]).sum(axis=2, dtype=np.int32)


def distances(plain: np.ndarray, mirrored: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
    """Return the mirror-aware distances from the images in ``rows`` to all images.

    Args:
        plain: (n, bytes) packed hashes of the images.
        mirrored: (n, bytes) packed hashes of their mirror images.
        rows: which images to measure from.

    Returns:
        (rows, n) int32 distances, ``min(d(a, b), d(a, mirror(b)))``.
    """
    a = np.ascontiguousarray(plain).view(np.uint64)
    m = np.ascontiguousarray(mirrored).view(np.uint64)
    return np.minimum(hamming(a[rows], a), hamming(a[rows], m))


def near_pairs(plain: np.ndarray, mirrored: np.ndarray, max_distance: int = MAX_DISTANCE) -> np.ndarray:
    """Return the index pairs (i, j), i != j, of images within ``max_distance`` bits.

    Args:
        plain: (n, bytes) packed hashes of the images.
        mirrored: (n, bytes) packed hashes of their mirror images.
        max_distance: the largest distance that still counts as the same image.

    Returns:
        An (m, 2) int64 array; a pair may appear in both orders.
    """
    n = len(plain)
    block = max(1, 2**25 // max(1, plain.size))  # bounds the (block, n, words) intermediate
    found = [np.empty((0, 2), np.int64)]
    for start in range(0, n, block):
        i, j = np.nonzero(distances(plain, mirrored, slice(start, start + block)) <= max_distance)
        found.append(np.column_stack([i + start, j])[i + start != j])
    return np.concatenate(found)


def group_ids(n: int, pairs: np.ndarray) -> np.ndarray:
    """Return a group id per item: connected components of the pair graph, numbered by first item.

    Args:
        n: number of items.
        pairs: (m, 2) index pairs that belong together.

    Returns:
        (n,) int group ids.
    """
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]
