"""How a scan becomes a model input, as the spec says: resized, colour mode, preprocessing.

Pure numpy and Pillow, thread-safe: the worker prepares a batch in a decoding thread while the
previous one is analysed, and training applies the very same ``PREPROCESS`` functions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from pipeline.model.spec import ModelSpec

# Per-channel statistics of the ImageNet training set, as keras.applications uses them.
CAFFE_BGR_MEANS = np.array([103.939, 116.779, 123.68], dtype=np.float32)
TORCH_MEANS = np.array([0.485, 0.456, 0.406], dtype=np.float32)
TORCH_STDS = np.array([0.229, 0.224, 0.225], dtype=np.float32)

PREPROCESS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "unit": lambda x: x / 255.0,
    "symmetric": lambda x: x / 127.5 - 1.0,
    "caffe": lambda x: x[..., ::-1] - CAFFE_BGR_MEANS,
    "torch": lambda x: (x / 255.0 - TORCH_MEANS) / TORCH_STDS,
    "none": lambda x: x,
}



def prepare_pixels(pixels: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Turn a scan's display pixels into one model input.

    Args:
        pixels: uint8, (H, W) gray or (H, W, 3) RGB, as ``pipeline.io.scans`` reads it.
        spec: gives the input size (width, height), colour mode and preprocessing.

    Returns:
        float32 (height, width, channels), resized bilinearly and preprocessed.

    Raises:
        ValueError: the array is not an 8-bit image.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or pixels.size == 0:
        raise ValueError(f"expected 8-bit image pixels (H, W) or (H, W, 3), got {pixels.dtype} "
                         f"array of shape {pixels.shape}")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    image = Image.fromarray(pixels)
    # A gray scan for an RGB model is resized as one channel and then repeated: the same values
    # as converting it first (Pillow resizes each channel alike) for a third of the work.
    keep = ("L", "RGB") if spec.color_mode == "rgb" else ("L",)
    if image.mode not in keep:  # converting to the same mode is a full copy (~0.15 ms a scan)
        image = image.convert("RGB" if spec.color_mode == "rgb" else "L")
    array = np.asarray(image.resize(spec.input_size, Image.Resampling.BILINEAR), dtype=np.float32)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2) if spec.color_mode == "rgb" else array[..., None]
    return PREPROCESS[spec.preprocessing](array).astype(np.float32, copy=False)
