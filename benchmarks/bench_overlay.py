"""What writing a scan's outputs costs next to decoding the scan's JPEG, at 256, 630 and 1920 px.

``write_outputs`` upsamples a 28 x 28 map (a small CNN's last conv at 224 px) to the scan's size, blends the overlay, and writes the
overlay PNG, the thumbnail and the heatmap npz. The reference is Pillow decoding the same scan
saved as a JPEG (open + convert("RGB") + asarray), which every scan pays anyway. The choices
inside ``pipeline.explain.overlay`` are measured beside it:

- the overlay's PNG encoder, ``png_bytes`` (fpng for RGB), against the encoder it replaced,
  ``deflated_png`` (Up filter in numpy, libdeflate level 1), Pillow's (level 1, run-length
  strategy, a filter chosen per row among all five) and libpng's through
  ``imagecodecs.png_encode`` (level 1, run-length, Paeth on every row): time and size ratios,
  above 1 where ``png_bytes`` is faster or smaller;
- the one-lookup blend table against the same blend done with per-pixel arithmetic;
- ``upsample`` (two matrix products) against Pillow's float bilinear resize of the same map;
- the heatmap file (the raw float32 map, deflated by libdeflate) against numpy's
  ``savez_compressed`` of the same map and against what the file held before: the map upsampled
  to the 224 x 224 input, as float16.

Then, per size, what each step of ``write_outputs`` costs on its own (upsampling the map, the blend,
the PNG, the thumbnail and its JPEG, the heatmap npz, creating the three files).

All variants run interleaved in one process over the same inputs; the best round of each counts.
A last line runs ``png_bytes`` and ``deflated_png`` from two threads against one, beside sha256
(which releases the GIL): near 2x means encoding overlaps with other threads; fpng holds the GIL
while it encodes, so ``png_bytes`` stays near 1x (at ~1.4 ms a scan it still leaves the GIL free
most of the time); sha256 near 1x means the machine had no second core free at the time.

    .venv/bin/python benchmarks/bench_overlay.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import itertools
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.explain.overlay import write_outputs  # noqa: E402
from pipeline.io.overlays import grayscale, render_overlay, render_thumbnail  # noqa: E402
from pipeline.io.heatmaps import NPZ_COMPRESS_LEVEL, colormap_lut, peak, upsample  # noqa: E402
from pipeline.io.npz import npz_bytes  # noqa: E402
from pipeline.io.png import deflated_png, jpeg_bytes, png_bytes  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "data" / "br35h" / "yes" / "y0.jpg"
SIDES = (256, 630, 1920)
CAM_SIZE = 28  # the target layer's resolution: what the analysis hands the writer
INPUT_SIZE = 224


def scan_jpeg(side: int, folder: Path) -> Path:
    """Save a scan whose longer side is ``side`` px as a JPEG; a real Br35H scan where present."""
    if SAMPLE.is_file():
        image = Image.open(SAMPLE).convert("RGB")
    else:
        rng = np.random.default_rng(0)
        image = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((64, 64))
    scale = side / max(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    path = folder / f"scan{side}.jpg"
    image.save(path, quality=90)
    return path


def smooth_cam() -> np.ndarray:
    """Return a Grad-CAM-like map: a few coarse bumps, at the target layer's resolution."""
    coarse = np.random.default_rng(1).random((7, 7)).astype(np.float32)
    return upsample(coarse, (CAM_SIZE, CAM_SIZE))


def decode(path: Path) -> np.ndarray:
    """Decode a JPEG the plain way."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def arithmetic_blend(pixels: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Blend as render_overlay does, computing every pixel in float32 instead of one lookup."""
    gray = grayscale(pixels).astype(np.float32)[..., None]
    weight = (alpha * heat)[..., None]
    colour = colormap_lut("turbo")[(heat * 255 + 0.5).astype(np.uint8)].astype(np.float32)
    return (gray * (1 - weight) + colour * weight + 0.5).astype(np.uint8)


def pillow_upsample(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float map with Pillow's bilinear filter (what ``upsample`` did before)."""
    return np.asarray(Image.fromarray(cam).resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def pillow_png(overlay: np.ndarray) -> bytes:
    """Encode with Pillow: level 1, run-length strategy, adaptive per-row filters."""
    buffer = io.BytesIO()
    Image.fromarray(overlay).save(buffer, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
    return buffer.getvalue()


def libpng_paeth(overlay: np.ndarray) -> bytes:
    """Encode with libpng through imagecodecs: level 1, run-length strategy, Paeth on every row."""
    return imagecodecs.png_encode(overlay, level=1, strategy=zlib.Z_RLE, filter=imagecodecs.PNG.FILTER.PAETH)


ENCODERS = {"png_bytes": png_bytes, "libdeflate Up": deflated_png, "Pillow": pillow_png,
            "libpng Paeth": libpng_paeth}


def best_of(rounds: int, variants: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Run the variants interleaved ``rounds`` times; return each one's best seconds."""
    best = {name: float("inf") for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def measure(side: int, folder: Path, rounds: int) -> None:
    """Print one line of costs and ratios for scans of one size."""
    path, cam = scan_jpeg(side, folder), smooth_cam()
    pixels = decode(path)
    heat = upsample(cam, (pixels.shape[1], pixels.shape[0]))
    overlay = render_overlay(pixels, heat)
    calls = itertools.count()
    times = best_of(rounds, {
        "decode": lambda: decode(path),
        # a new stem each call, as in a job: renaming over an existing file makes ext4 write it out
        "write": lambda: write_outputs(folder / f"out{side}" / f"scan{next(calls)}", pixels, cam),
        "table": lambda: render_overlay(pixels, heat),
        "arith": lambda: arithmetic_blend(pixels, heat),
        "upsample": lambda: upsample(cam, (pixels.shape[1], pixels.shape[0])),
        "pillow upsample": lambda: pillow_upsample(cam, (pixels.shape[1], pixels.shape[0])),
        **{name: functools.partial(encode, overlay) for name, encode in ENCODERS.items()},
    })
    ms = {name: seconds * 1e3 for name, seconds in times.items()}
    size = {name: len(encode(overlay)) for name, encode in ENCODERS.items()}
    ours = "png_bytes"
    versus = "  ".join(f"{name} {ms[name] / ms[ours]:4.1f}x time {size[name] / size[ours]:4.2f}x size"
                       for name in ENCODERS if name != ours)
    print(f"{pixels.shape[1]:>5}x{pixels.shape[0]:<5} decode {ms['decode']:6.1f} ms  "
          f"write_outputs {ms['write']:6.1f} ms  write/decode {ms['write'] / ms['decode']:4.1f}  |  "
          f"blend arithmetic/table {ms['arith'] / ms['table']:4.1f}  |  "
          f"upsample Pillow/ours {ms['pillow upsample'] / ms['upsample']:4.1f}  |  "
          f"png_bytes {ms['png_bytes']:5.1f} ms {size['png_bytes'] / 1024:5.0f} KiB, {versus}")


def numpy_npz(save: Callable, cam: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    save(buffer, cam=cam, size=np.array([630, 630], np.int32))
    return buffer.getvalue()


def measure_heatmap(rounds: int) -> None:
    """Print the heatmap file's cost: ours against numpy's writer and the earlier 224 px form."""
    cam = smooth_cam()
    at_input = upsample(cam, (INPUT_SIZE, INPUT_SIZE)).astype(np.float16)
    variants = {
        "ours": lambda: npz_bytes(NPZ_COMPRESS_LEVEL, cam=cam, size=np.array([630, 630], np.int32)),
        "savez_compressed": lambda: numpy_npz(np.savez_compressed, cam),
        f"{INPUT_SIZE}px float16 (before)": lambda: npz_bytes(NPZ_COMPRESS_LEVEL, cam=at_input,
                                                              size=np.array([630, 630], np.int32)),
    }
    ms = {name: seconds * 1e3 for name, seconds in best_of(rounds, variants).items()}
    size = {name: len(run()) for name, run in variants.items()}
    versus = "  ".join(f"{name} {ms[name] / ms['ours']:4.1f}x time {size[name] / size['ours']:4.2f}x size"
                       for name in variants if name != "ours")
    print(f"heatmap npz {CAM_SIZE}x{CAM_SIZE}: ours {ms['ours']:5.3f} ms {size['ours'] / 1024:4.1f} KiB, {versus}")


def threads_over_one(run: Callable[[], object], rounds: int, calls: int = 40) -> float:
    """Return the throughput of ``calls`` calls from two threads over that from one, best rounds."""
    def seconds(threads: int) -> float:
        with ThreadPoolExecutor(threads) as pool:
            start = time.perf_counter()
            list(pool.map(lambda _: run(), range(calls)))
            return time.perf_counter() - start
    return min(seconds(1) for _ in range(rounds)) / min(seconds(2) for _ in range(rounds))


def measure_steps(side: int, folder: Path, rounds: int) -> None:
    """Print what each step of ``write_outputs`` costs for scans of one size, in ms."""
    path, cam = scan_jpeg(side, folder), smooth_cam()
    pixels = decode(path)
    size = (pixels.shape[1], pixels.shape[0])
    heat = upsample(cam, size)
    overlay = render_overlay(pixels, heat)
    gray = grayscale(pixels)
    preview = render_thumbnail(gray, cam)
    png, npz = png_bytes(overlay), npz_bytes(NPZ_COMPRESS_LEVEL, cam=cam, size=np.array(size, np.int32))
    calls = itertools.count()

    def files() -> None:  # three new files, as a scan's outputs are written
        stem = folder / f"steps{side}" / f"scan{next(calls)}"
        stem.parent.mkdir(exist_ok=True)
        for suffix, data in ((".overlay.png", png), (".thumb.jpg", b"x" * 9000), (".heatmap.npz", npz)):
            stem.with_name(stem.name + suffix).write_bytes(data)

    steps = {"upsample": lambda: upsample(cam, size), "grayscale": lambda: grayscale(pixels),
             "blend incl. grayscale": lambda: render_overlay(pixels, heat), "peak": lambda: peak(heat),
             "png": lambda: png_bytes(overlay), "thumbnail": lambda: render_thumbnail(gray, cam),
             "thumbnail (resizing the overlay)": lambda: Image.fromarray(overlay).resize(
                 preview.size, Image.Resampling.BILINEAR, reducing_gap=2.0),
             "thumbnail jpeg": lambda: jpeg_bytes(preview),
             "heatmap npz": lambda: npz_bytes(NPZ_COMPRESS_LEVEL, cam=cam, size=np.array(size, np.int32)),
             "3 files": files}
    ms = {name: seconds * 1e3 for name, seconds in best_of(rounds, steps).items()}
    print(f"{size[0]:>5}x{size[1]:<5} steps of write_outputs, ms: "
          + ", ".join(f"{name} {value:.2f}" for name, value in ms.items()))


def measure_threads(folder: Path, rounds: int) -> None:
    """Print how png_bytes scales from one thread to two, with sha256 as the GIL-free reference."""
    pixels = decode(scan_jpeg(630, folder))
    overlay = render_overlay(pixels, upsample(smooth_cam(), (pixels.shape[1], pixels.shape[0])))
    encode = threads_over_one(lambda: png_bytes(overlay), rounds)
    deflated = threads_over_one(lambda: deflated_png(overlay), rounds)
    digest = threads_over_one(lambda: [hashlib.sha256(overlay.data).digest() for _ in range(4)], rounds)
    print(f"two threads over one, {pixels.shape[1]}x{pixels.shape[0]}: png_bytes {encode:4.2f}x, "
          f"deflated_png {deflated:4.2f}x, sha256 {digest:4.2f}x (releases the GIL: how much a "
          "second core was free)")


def main(argv: list[str] | None = None) -> int:
    """Measure every size and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, best kept (default 5)")
    args = parser.parse_args(argv)
    print(f"scan source: {SAMPLE if SAMPLE.is_file() else 'synthetic (Br35H not found)'}; "
          f"map {CAM_SIZE}x{CAM_SIZE}; best of {args.rounds} rounds")
    with tempfile.TemporaryDirectory() as folder:
        for side in SIDES:
            measure(side, Path(folder), args.rounds)
        for side in SIDES:
            measure_steps(side, Path(folder), args.rounds)
        measure_heatmap(args.rounds)
        measure_threads(Path(folder), args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
