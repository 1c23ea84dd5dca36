"""Controlled shifts of a test set: seeded transforms of a scan and its mask, and their table.

Every shift maps a scan's display pixels (uint8 (H, W) or (H, W, 3)) and its tumor mask (bool
(H, W) or None) to new ones of the same dtype and number of channels. Geometric shifts
(resolution, padding, crop, off-centre) resize or move the mask exactly as the pixels, so the
pointing game is still scored against the tumor; intensity, noise, blur and JPEG leave the mask.
Each transform is ``f(pixels, mask, severity, rng) -> (pixels, mask)``; ``Shift`` binds a family
and a severity and seeds ``rng``, giving the ``transform(pixels, mask)`` that ``evaluate`` takes.
The transforms follow STYLE item 15 (TorchIO's RandomGamma, RandomBiasField, RandomAnisotropy).
"""

from __future__ import annotations

import io
import math
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from pipeline.data.annotations import Annotations
from pipeline.data.datasets import Example
from pipeline.evaluate.evaluation import DEFAULT_BATCH, evaluate, sample
from pipeline.model.spec import ModelSpec

# Severities of each family, mildest first. Units: resolution, the longest side in px (the model's
# own resize follows); padding, the share of each side added as black border; crop, the share of
# each side kept around the centre; off-centre, the shift of the head as a share of each side;
# gamma, the exponent; contrast, the factor around the mean; bias-field, TorchIO's coefficient
# bound; inversion, the share of the grey range (from the top) whose order is reversed; noise,
# the Gaussian sigma in grey levels; blur, the Gaussian sigma in the scan's pixels; jpeg, quality.
SHIFTS: dict[str, tuple[float, ...]] = {
    "resolution": (512, 256, 150),
    "padding": (0.1, 0.25, 0.5),
    "crop": (0.9, 0.8, 0.7),
    "off-centre": (0.1, 0.2, 0.3),
    "gamma": (0.7, 1.5, 2.2),
    "contrast": (0.8, 0.6, 0.4),
    "bias-field": (0.2, 0.4, 0.6),
    "inversion": (0.25, 0.5, 1.0),
    "noise": (5, 10, 20),
    "blur": (1, 2, 4),
    "jpeg": (75, 50, 25),
}
# The severity the accuracy bar applies to: the middle one of each family.
MODERATE: dict[str, float] = {name: levels[len(levels) // 2] for name, levels in SHIFTS.items()}
ACCURACY_BAR = 0.03  # a moderate shift should cost at most 3 points of accuracy
BIAS_ORDER = 3  # TorchIO RandomBiasField's default polynomial order


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 pixels (bilinear, as the model's own resize) to ``size`` (width, height)."""
    image = Image.fromarray(np.ascontiguousarray(array))
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR))


def _resize_mask(mask: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    # the same bilinear mapping as the pixels, halved: the region keeps its place and area
    return None if mask is None else _resize(mask.astype(np.uint8) * 255, size) > 127


def _canvas(array: np.ndarray, height: int, width: int, top: int, left: int) -> np.ndarray:
    """Place ``array`` on a zero (black) canvas with its corner at (top, left), cut at the edges."""
    out = np.zeros((height, width, *array.shape[2:]), dtype=array.dtype)
    rows, cols = array.shape[:2]
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + rows, height), min(left + cols, width)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = array[y0 - top:y1 - top, x0 - left:x1 - left]
    return out


def _move(pixels: np.ndarray, mask: np.ndarray | None, height: int, width: int, top: int,
          left: int) -> tuple[np.ndarray, np.ndarray | None]:
    moved = _canvas(pixels, height, width, top, left)
    return moved, None if mask is None else _canvas(mask, height, width, top, left)


def resolution(pixels, mask, longest, rng):
    """Resize the scan and its mask so the longest side is ``longest`` px."""
    height, width = pixels.shape[:2]
    scale = longest / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return pixels, mask
    return _resize(pixels, size), _resize_mask(mask, size)


def padding(pixels, mask, fraction, rng):
    """Add a black border of ``fraction`` of each side, split evenly, around scan and mask."""
    height, width = pixels.shape[:2]
    extra_y, extra_x = round(height * fraction), round(width * fraction)
    return _move(pixels, mask, height + extra_y, width + extra_x, extra_y // 2, extra_x // 2)


def crop(pixels, mask, fraction, rng):
    """Keep the central ``fraction`` of each side of scan and mask: the tight crop."""
    height, width = pixels.shape[:2]
    rows, cols = max(1, round(height * fraction)), max(1, round(width * fraction))
    return _move(pixels, mask, rows, cols, -((height - rows) // 2), -((width - cols) // 2))


def off_centre(pixels, mask, fraction, rng):
    """Translate scan and mask by ``fraction`` of each side in a seeded direction, black fill."""
    height, width = pixels.shape[:2]
    angle = rng.uniform(0.0, 2.0 * math.pi)
    top, left = round(fraction * height * math.sin(angle)), round(fraction * width * math.cos(angle))
    return _move(pixels, mask, height, width, top, left)


def _curve(pixels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return _to_uint8(lut)[pixels]  # a grey-level curve is exact and fast as a 256-entry table


def gamma(pixels, mask, exponent, rng):
    """Apply the gamma curve ``255 (x / 255) ** exponent``."""
    return _curve(pixels, 255.0 * (np.arange(256) / 255.0) ** exponent), mask


def contrast(pixels, mask, factor, rng):
    """Scale the grey levels' distance from the scan's mean by ``factor``."""
    mean = float(pixels.mean())
    return _curve(pixels, mean + factor * (np.arange(256) - mean)), mask


def inversion(pixels, mask, share, rng):
    """Reverse the order of the top ``share`` of the grey range: a tent-shaped contrast curve.

    The levels below ``t = 255 (1 - share)`` are stretched over 0..255 and those above it run back
    down to 0, so 0 is the identity and 1 is ``255 - x``. A plain blend with ``255 - x`` was
    rejected: at 0.5 it is a flat grey image, which no model could be asked to read.
    """
    levels, top = np.arange(256, dtype=np.float64), 255.0 * (1.0 - share)
    with np.errstate(divide="ignore", invalid="ignore"):
        rising = np.where(top > 0, 255.0 * levels / top, 255.0)
        falling = 255.0 * (255.0 - levels) / (255.0 - top)
    return _curve(pixels, np.where(levels <= top, rising, falling)), mask


def _per_pixel(pixels: np.ndarray, field: np.ndarray) -> np.ndarray:
    # one (H, W) field for every channel, so a gray scan stored as colour stays gray
    return field[..., None] if pixels.ndim == 3 else field


def bias_field(pixels, mask, coefficient, rng):
    """Multiply by a smooth field ``exp(polynomial)``, coefficients in ±``coefficient`` (TorchIO)."""
    height, width = pixels.shape[:2]
    y = np.linspace(-1.0, 1.0, height)[:, None]
    x = np.linspace(-1.0, 1.0, width)[None, :]
    log_field = np.zeros((height, width))
    for i in range(BIAS_ORDER + 1):
        for j in range(BIAS_ORDER + 1 - i):
            log_field = log_field + rng.uniform(-coefficient, coefficient) * x ** i * y ** j
    return _to_uint8(pixels * _per_pixel(pixels, np.exp(log_field))), mask


def noise(pixels, mask, sigma, rng):
    """Add seeded Gaussian noise of ``sigma`` grey levels."""
    field = rng.normal(0.0, sigma, pixels.shape[:2])
    return _to_uint8(pixels + _per_pixel(pixels, field)), mask


def blur(pixels, mask, sigma, rng):
    """Blur with a Gaussian of ``sigma`` px (in the scan's own pixels), channels apart."""
    sigmas = (sigma, sigma, 0)[:pixels.ndim]
    return _to_uint8(ndimage.gaussian_filter(pixels.astype(np.float32), sigmas)), mask


def jpeg(pixels, mask, quality, rng):
    """Encode the scan as JPEG at ``quality`` and decode it again."""
    image = Image.fromarray(np.ascontiguousarray(pixels))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert(image.mode)), mask


TRANSFORMS = {"resolution": resolution, "padding": padding, "crop": crop, "off-centre": off_centre,
              "gamma": gamma, "contrast": contrast, "bias-field": bias_field, "inversion": inversion,
              "noise": noise, "blur": blur, "jpeg": jpeg}


@dataclass(frozen=True)
class Shift:
    """One family at one severity, called as ``transform(pixels, mask) -> (pixels, mask)``.

    The random draws (noise, bias field, off-centre direction) are seeded by the family, the
    severity and the scan's own pixels: a scan gets the same draw whatever subset (``--limit``) or
    order it is evaluated in, and different scans get different draws.
    """

    name: str
    severity: float

    def __post_init__(self):
        if self.name not in TRANSFORMS:
            raise ValueError(f"unknown shift {self.name!r}: expected one of {', '.join(TRANSFORMS)}")

    def seed(self, pixels: np.ndarray) -> list[int]:
        """Return the seed of this shift's draws on one scan."""
        shape = zlib.crc32(str(pixels.shape).encode())
        content = zlib.crc32(np.ascontiguousarray(pixels).tobytes(), shape)
        return [zlib.crc32(self.name.encode()), zlib.crc32(repr(float(self.severity)).encode()),
                content]

    def __call__(self, pixels: np.ndarray,
                 mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Return the shifted scan and its mask (None stays None); the inputs are not changed."""
        rng = np.random.default_rng(self.seed(pixels))
        return TRANSFORMS[self.name](pixels, mask, self.severity, rng)


def _row(shift: str, severity: float | None, report: dict, method: str,
         unshifted: dict | None) -> dict:
    """Return one table row: the classification and the method's pointing game of a report."""
    classification, localised = report["classification"], report["localisation"][method]
    accuracy = classification["accuracy"]
    return {
        "shift": shift, "severity": severity,
        "moderate": severity is not None and MODERATE.get(shift) == severity,
        "scans": classification["n"], "accuracy": accuracy,
        "delta_accuracy": accuracy - (unshifted["accuracy"] if unshifted else accuracy),
        "sensitivity": classification["sensitivity"], "specificity": classification["specificity"],
        "roc_auc": classification["roc_auc"],
        "pointing": localised.get("pointing"), "localised": localised["n"],
    }


def shift_table(spec: ModelSpec, examples: Sequence[Example], annotations: Annotations | None = None,
                shifts: Sequence[str] = tuple(SHIFTS),
                severities: Mapping[str, Sequence[float]] | None = None,
                method: str = "gradcam", batch_size: int = DEFAULT_BATCH,
                limit: int | None = None) -> dict:
    """Evaluate a test set as it is and under each shift at each severity.

    Args:
        spec: the model to evaluate.
        examples: the labelled scans (a TEST split).
        annotations: where tumor outlines come from (masks beside images are always found).
        shifts: the families to apply, names of ``SHIFTS``.
        severities: severities replacing ``SHIFTS``'s for some families; None keeps them all.
        method: the CAM method whose pointing game is reported.
        batch_size: scans per analysis pass.
        limit: evaluate a seeded random subset of this many scans (all of them when None).

    Returns:
        A JSON-ready dict: ``rows`` (the unshifted row, shift "none", then one per shift and
        severity, each with ``accuracy``, ``delta_accuracy`` against the unshifted row,
        ``sensitivity``, ``specificity``, ``roc_auc``, ``pointing`` over ``localised`` outlined
        tumor scans and whether it is the family's ``moderate`` severity), ``over_bar`` (the
        moderate rows that cost more than ``bar`` of accuracy), ``model``, ``method``, ``scans``,
        ``skipped``, ``seconds``.
    """
    started = time.perf_counter()
    severities = {**SHIFTS, **(severities or {})}
    transforms = [Shift(name, severity)  # an unknown name is refused by Shift
                  for name in shifts for severity in severities.get(name, (None,))]
    examples = sample(examples, limit)
    report = evaluate(spec, examples, (method,), annotations, batch_size)
    unshifted = _row("none", None, report, method, None)
    rows = [unshifted]
    for transform in transforms:
        shifted = evaluate(spec, examples, (method,), annotations, batch_size, transform=transform)
        rows.append(_row(transform.name, transform.severity, shifted, method, unshifted))
    return {
        "model": spec.name, "method": method, "scans": unshifted["scans"],
        "skipped": len(report["skipped"]), "rows": rows, "bar": ACCURACY_BAR,
        "over_bar": [r for r in rows if r["moderate"] and -r["delta_accuracy"] > ACCURACY_BAR + 1e-9],
        "seconds": round(time.perf_counter() - started, 2),
    }
