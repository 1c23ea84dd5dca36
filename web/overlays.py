"""Full-size overlays for the scan page, drawn on demand from the source scan and the stored map.

A job whose overlays are on demand keeps each scan's map and thumbnail only. The first view of a
scan draws its overlay here, in a worker thread of the web process (numpy, Pillow and fpng: no
TensorFlow), with the bytes an eager job writes (``pipeline.io.overlays.overlay_png``). It is kept
in an on-disk cache (diskcache) under a size cap (``OVERLAY_CACHE_BYTES``), the least recently
viewed evicted first; the cache is shared by the web processes of a host. A request for an
overlay being drawn waits for that drawing instead of starting another.

The source must still be what was analysed: it is hashed before it is drawn, and a missing or
changed file is told in words (``OverlayUnavailable``); the page then shows the map over the
stored thumbnail instead.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from flask import Flask, current_app

from pipeline.io.scans import ScanError
from web.folders import OutsideBase, resolve_inside
from worker.models import Result

EXTENSION = "tumorlens_overlays"
RENDER_VERSION = "1"  # part of every key and ETag: a change to the drawing invalidates both


class OverlayUnavailable(LookupError):
    """An overlay that cannot be drawn again; the message says why, for a person."""


class OverlayCache:
    """Draws overlays in a thread pool and keeps them on disk under a size cap (LRU)."""

    def __init__(self, folder: Path, size_limit: int, threads: int):
        self.folder, self.size_limit, self.threads = Path(folder), size_limit, threads
        self._lock = threading.Lock()
        self._drawing: dict[str, Future] = {}
        self._pid, self._cache, self._pool = None, None, None

    def _open(self):
        """Open the cache and the pool in this process (a forked web worker opens its own)."""
        with self._lock:
            if self._pid != os.getpid():
                import diskcache

                self.folder.mkdir(parents=True, exist_ok=True)
                # Every value in its own file (disk_min_file_size 0): the SQLite index stays small,
                # so the cap counts overlays, not database pages.
                self._cache = diskcache.Cache(str(self.folder), size_limit=self.size_limit,
                                              eviction_policy="least-recently-used",
                                              disk_min_file_size=0, cull_limit=4)
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="overlay")
                self._pid, self._drawing = os.getpid(), {}
        return self._cache, self._pool

    def volume(self) -> int:
        """Return the bytes the cache holds on disk (its index included)."""
        return self._open()[0].volume()

    def get(self, key: str, draw) -> bytes:
        """Return the cached bytes of ``key``, drawing them with ``draw()`` on a miss."""
        cache, pool = self._open()
        data = cache.get(key)
        if data is not None:
            return data
        with self._lock:
            future = self._drawing.get(key)
            if future is None:
                future = self._drawing[key] = pool.submit(self._draw_and_keep, key, draw)
        return future.result()

    def _draw_and_keep(self, key: str, draw) -> bytes:
        try:
            data = draw()
            self._cache.set(key, data)
            return data
        finally:
            with self._lock:
                self._drawing.pop(key, None)


def init_app(app: Flask) -> None:
    """Attach the overlay cache configured by ``OVERLAY_CACHE_DIR`` and ``OVERLAY_CACHE_BYTES``."""
    app.extensions[EXTENSION] = OverlayCache(Path(app.config["OVERLAY_CACHE_DIR"]),
                                             int(app.config["OVERLAY_CACHE_BYTES"]),
                                             int(app.config["OVERLAY_THREADS"]))


def cache() -> OverlayCache:
    return current_app.extensions[EXTENSION]


def overlay_key(result: Result) -> str:
    """Return the cache key of a result's overlay: what it is drawn from, and how."""
    return f"overlay:{RENDER_VERSION}:{result.id}:{result.scan.sha256 or '-'}"


def etag(result: Result) -> str:
    return hashlib.sha256(overlay_key(result).encode()).hexdigest()[:32]


def stored_overlay(result: Result, output_dir: Path) -> Path | None:
    """Return the overlay an eager job wrote for ``result``, if it is there."""
    try:
        path = resolve_inside(output_dir, result.overlay)
    except (OutsideBase, OSError):
        return None
    return path if path.is_file() else None


def overlay_bytes(result: Result, output_dir: Path) -> bytes:
    """Return the result's full-size overlay PNG, drawn and cached on first use.

    Raises:
        OverlayUnavailable: the source scan or the stored map is gone, changed or unreadable.
    """
    scan = result.scan
    source, heatmap = Path(scan.job.root) / scan.path, output_dir / result.heatmap
    try:
        return cache().get(overlay_key(result), lambda: _draw(source, scan.sha256, result.frame, heatmap))
    except ScanError as exc:
        raise OverlayUnavailable(f"The overlay cannot be drawn: {exc}.") from exc
    except (OSError, ValueError, KeyError) as exc:
        raise OverlayUnavailable(f"The stored heatmap cannot be read ({exc}).") from exc


def _draw(source: Path, sha256: str | None, frame: int, heatmap: Path) -> bytes:

    from pipeline.io.npz import load_arrays
    from pipeline.io.overlays import overlay_png, source_frames

    frames = source_frames(source, sha256)
    if frame not in frames:
        raise ScanError(f"it has no frame {frame} any more")
    return overlay_png(frames[frame], load_arrays(heatmap)["cam"])
