"""Regenerate samples/dicom/no613.dcm: one Br35H no-tumor slice wrapped in a DICOM file.

The file carries no patient data and no invented acquisition numbers: only the pixels, an
identity window (so it shows exactly like the JPEG it came from) and identifiers derived from the
pixels, so running this again writes the same bytes. RLE keeps it small and decodes everywhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.builders.scans import make_dicom  # noqa: E402  (needs the project root on the path)

SOURCE = ROOT.parent / "shared" / "data" / "br35h" / "no" / "no613.jpg"
TARGET = ROOT / "samples" / "dicom" / "no613.dcm"


def wrap(source: Path, target: Path) -> Path:
    """Write the grayscale pixels of source as a secondary-capture DICOM at target."""
    with Image.open(source) as image:
        pixels = np.asarray(image.convert("L"))
    return make_dicom(target, pixels, phi=False, acquisition=False, window=(128, 256),
                      transfer_syntax=uid.RLELossless, sop_class=uid.SecondaryCaptureImageStorage,
                      extra={"ConversionType": "WSD"})


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and write the sample."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE, help="a Br35H image (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=TARGET, help="where to write (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        parser.error(f"{args.source} does not exist: pass --source with a Br35H no-tumor image")
    print(wrap(args.source, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
