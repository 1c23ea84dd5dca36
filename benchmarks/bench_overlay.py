"""What writing a scan's outputs costs next to decoding the scan's JPEG, at 256, 630 and 1920 px.

``write_outputs`` upsamples a 224 x 224 map to the scan's size, blends the overlay, and writes the
overlay PNG, the thumbnail and the heatmap npz. The reference is Pillow decoding the same scan
saved as a JPEG (open + convert("RGB") + asarray), which every scan pays anyway. Two choices
inside ``pipeline.overlay`` are measured beside it: PNG compression level 1 against Pillow's
default 6, and the one-lookup blend table against the same blend done with per-pixel arithmetic.
All variants run interleaved in one process over the same inputs; the best round of each counts.

    .venv/bin/python benchmarks/bench_overlay.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.overlay import colormap_lut, grayscale, render_overlay, upsample, write_outputs  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "data" / "br35h" / "yes" / "y0.jpg"
SIDES = (256, 630, 1920)
CAM_SIZE = 224


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
    """Return a Grad-CAM-like map: a few coarse bumps, at the model's input size."""
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


def png_size(level: int) -> Callable[[np.ndarray], int]:
    """Return a function encoding an RGB array as PNG at ``level``; it returns the byte count."""
    def encode(overlay: np.ndarray) -> int:
        buffer = io.BytesIO()
        Image.fromarray(overlay).save(buffer, format="PNG", compress_level=level)
        return buffer.tell()
    return encode


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
    times = best_of(rounds, {
        "decode": lambda: decode(path),
        "write": lambda: write_outputs(folder / f"out{side}" / "scan", pixels, cam),
        "table": lambda: render_overlay(pixels, heat),
        "arith": lambda: arithmetic_blend(pixels, heat),
        "png1": lambda: png_size(1)(overlay),
        "png6": lambda: png_size(6)(overlay),
    })
    ms = {name: seconds * 1e3 for name, seconds in times.items()}
    size1, size6 = png_size(1)(overlay), png_size(6)(overlay)
    print(f"{pixels.shape[1]:>5}x{pixels.shape[0]:<5} decode {ms['decode']:7.1f} ms  "
          f"write_outputs {ms['write']:7.1f} ms  write/decode {ms['write'] / ms['decode']:5.1f}  |  "
          f"blend arithmetic/table {ms['arith'] / ms['table']:4.1f}  |  "
          f"PNG level 6/1 time {ms['png6'] / ms['png1']:4.1f}, size {size6 / size1:4.2f}")


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
