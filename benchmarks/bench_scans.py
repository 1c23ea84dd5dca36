"""How much reading a scan through read_scan costs next to a bare decode of the same file.

read_scan adds the safety checks (file type, size limits, bomb guard), EXIF orientation and the
conversion to display-ready uint8 (gray (H, W) or RGB (H, W, 3)); the bare decode is what a script
would write without them: Pillow's open + convert("RGB") for images, pydicom's pixel_array for
DICOM. Both run interleaved in one process over the same files, so the ratio is what read_scan
costs on top.

The last lines measure what keeping gray scans one channel saves: a gray scan's pixels turned into
a model's input (the default model's, gray at 160 px, and an RGB model's at 224 px) and the
overlay's gray background, as read (one channel) against the same pixels widened to three equal
channels (how scans were read before; read_scan now also keeps one channel of a gray image
stored as colour, and its check for equal channels is part of read_scan's cost above).

    .venv/bin/python benchmarks/bench_scans.py [--images 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.io.scans import read_scan  # noqa: E402  (needs the project root on the path)

BR35H = ROOT.parent / "shared" / "data" / "br35h"


def bare_image(path: Path) -> np.ndarray:
    """Decode an image the plain way, without checks."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def bare_dicom(path: Path) -> np.ndarray:
    """Decode a DICOM file's stored values the plain way, without display chain or checks."""
    return pydicom.dcmread(path).pixel_array


def timed(function, paths: list[Path]) -> float:
    """Return the seconds function takes over all paths."""
    start = time.perf_counter()
    for path in paths:
        function(path)
    return time.perf_counter() - start


def compare(name: str, bare, paths: list[Path], rounds: int) -> None:
    """Time bare and read_scan alternately and print the best of each and their ratio."""
    timed(read_scan, paths), timed(bare, paths)  # warm the page cache and lazy imports
    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(timed(read_scan, paths))
        theirs.append(timed(bare, paths))
    best_ours, best_theirs = min(ours), min(theirs)
    print(f"{name:<34} {len(paths):>5} files  read_scan {best_ours * 1e3 / len(paths):7.2f} ms/file  "
          f"bare {best_theirs * 1e3 / len(paths):7.2f} ms/file  ratio {best_ours / best_theirs:5.2f}")


def dicom_files() -> list[Path]:
    """Return pydicom's bundled DICOM test files that decode with the installed plugins."""
    from pydicom.data import get_testdata_file

    names = ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "CT_small.dcm",
             "emri_small.dcm", "SC_rgb_jpeg_dcmtk.dcm", "693_J2KI.dcm", "examples_palette.dcm")
    return [Path(found) for found in map(get_testdata_file, names) if found]


def gray_to_model_and_overlay(pixels: np.ndarray, spec) -> None:
    """What every scan's pixels go through after reading: the model input, the overlay's gray."""
    from pipeline.model.preprocess import prepare_pixels
    from pipeline.io.overlays import grayscale

    prepare_pixels(pixels, spec), grayscale(pixels)


def rgb_spec(folder: Path):
    """Return the spec of an RGB model at 224 px (preparing an input never opens the model file)."""
    from pipeline.model.spec import load_spec, write_spec

    (folder / "model.keras").write_bytes(b"")
    return load_spec(write_spec({"name": "rgb-224", "file": "model.keras", "input_size": [224, 224],
                                 "color_mode": "rgb", "preprocessing": "unit",
                                 "class_names": ["no_tumor", "tumor"], "positive_classes": ["tumor"],
                                 "output": "probabilities"}, folder))


def compare_gray(rounds: int) -> None:
    """Print the cost of gray scans kept one channel against the same scans widened to RGB."""
    import tempfile

    from pipeline.model.spec import load_spec

    with tempfile.TemporaryDirectory() as folder:
        for spec in (load_spec(ROOT / "models" / "default"), rgb_spec(Path(folder))):
            compare_gray_for(spec, rounds)


def compare_gray_for(spec, rounds: int) -> None:
    rng = np.random.default_rng(0)
    for side in (256, 512):
        scans = [rng.integers(0, 256, (side, side), dtype=np.uint8) for _ in range(50)]
        widened = [np.repeat(gray[..., None], 3, axis=2) for gray in scans]
        kept, wide = [], []
        for _ in range(rounds + 1):  # the first round warms up
            for times, batch in ((kept, scans), (wide, widened)):
                start = time.perf_counter()
                for pixels in batch:
                    gray_to_model_and_overlay(pixels, spec)
                times.append(time.perf_counter() - start)
        best_kept, best_wide = min(kept[1:]), min(wide[1:])
        print(f"gray {side}x{side} to {spec.color_mode} {spec.input_size[0]} px input + overlay gray: one channel "
              f"{best_kept * 1e3 / len(scans):5.2f} ms/scan, widened to RGB "
              f"{best_wide * 1e3 / len(scans):5.2f} ms/scan, ratio {best_wide / best_kept:5.2f}")


def main(argv: list[str] | None = None) -> int:
    """Run the comparisons and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="Br35H images to read (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds, best kept (default 3)")
    args = parser.parse_args(argv)
    if BR35H.is_dir():
        images = sorted((BR35H / "yes").glob("*.jpg"))[: args.images // 2]
        images += sorted((BR35H / "no").glob("*.jpg"))[: args.images - len(images)]
        compare("Br35H JPEG/PNG (read_scan / Pillow)", bare_image, images, args.rounds)
    else:
        print(f"Br35H not found at {BR35H}: image comparison skipped")
    compare("DICOM (read_scan / pixel_array)", bare_dicom, dicom_files() * 5, args.rounds)
    compare_gray(args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
