"""Class activation map methods: one base, each method overriding only the channel weights.

A map is ReLU(sum over channels k of w_k * A_k) at the target layer's own resolution, divided by
its maximum, so an all-zero map stays zero instead of becoming NaN, and nothing is min-max
stretched or inverted. Maps leave the compiled pass at that resolution and are upsampled once,
straight to each scan's original size, by ``pipeline.io.heatmaps.upsample``: resizing every map to the
model input first cost ~10 % of a small CNN's pass, and the full-size map was then resized again.
Every operation keeps the batch axis: images never share gradients or weights. All of it runs
inside the caller's compiled function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

Normalise = Callable[[tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class CamInputs:
    """What one forward pass yields for a batch, all with the batch as first axis."""

    images: tf.Tensor  # (N, H, W, c) preprocessed input
    features: tf.Tensor  # (N, h, w, C) target layer maps
    gradients: tf.Tensor | None  # (N, h, w, C) d(chosen class score)/d(features); None if unneeded
    chosen: tf.Tensor  # (N,) int32 class explained for each image


def divide_by_max(maps: tf.Tensor) -> tf.Tensor:
    """Scale each non-negative map so its maximum is 1; an all-zero map stays zero."""
    peak = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(maps, peak)


class CamMethod:
    """Base of the family: turns channel weights into normalised maps."""

    name = ""
    needs_gradients = True

    def __init__(self, normalise: Normalise = divide_by_max) -> None:
        self.normalise = normalise

    def channel_weights(self, inputs: CamInputs) -> tf.Tensor:
        """Return weights (N, C), or elementwise weights (N, h, w, C)."""
        raise NotImplementedError

    def maps(self, inputs: CamInputs) -> tf.Tensor:
        """Return (N, h, w) maps in [0, 1] at the resolution (h, w) of the target layer."""
        weights = self.channel_weights(inputs)
        if weights.shape.rank == 2:
            weights = weights[:, None, None, :]
        return self.normalise(tf.nn.relu(tf.reduce_sum(weights * inputs.features, axis=-1)))


class GradCam(CamMethod):
    """Grad-CAM (Selvaraju et al. 2017): each image's gradients averaged over its own positions."""

    name = "gradcam"

    def channel_weights(self, inputs: CamInputs) -> tf.Tensor:
        return tf.reduce_mean(inputs.gradients, axis=(1, 2))


class GradCamPlusPlus(CamMethod):
    """Grad-CAM++ (Chattopadhyay et al. 2018), closed form for an exponential of the class score.

    With S = exp(Y) the second and third derivatives are powers of the first one, and the common
    factor exp(Y) cancels out of the normalised map (as in pytorch-grad-cam).
    """

    name = "gradcampp"

    def channel_weights(self, inputs: CamInputs) -> tf.Tensor:
        grads = inputs.gradients
        squared, cubed = grads**2, grads**3
        total = tf.reduce_sum(inputs.features, axis=(1, 2), keepdims=True)
        alpha = tf.math.divide_no_nan(squared, 2 * squared + total * cubed)
        return tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))


class LayerCam(CamMethod):
    """Layer-CAM (Jiang et al. 2021): positive gradients weight each position of each channel."""

    name = "layercam"

    def channel_weights(self, inputs: CamInputs) -> tf.Tensor:
        return tf.nn.relu(inputs.gradients)


class ClassActivationMap(CamMethod):
    """CAM (Zhou et al. 2016): the class's Dense weights after global average pooling."""

    name = "cam"
    needs_gradients = False

    def __init__(self, class_kernel: np.ndarray, **kwargs: Normalise) -> None:
        super().__init__(**kwargs)
        self.class_kernel = tf.constant(class_kernel.T, dtype=tf.float32)  # (K, C)

    def channel_weights(self, inputs: CamInputs) -> tf.Tensor:
        return tf.gather(self.class_kernel, inputs.chosen)


class ScoreCam(CamMethod):
    """Score-CAM (Wang et al. 2020): each channel weighted by the class score of the input it masks.

    Channel k's map, upsampled and min-max scaled to [0, 1], masks the input; the chosen class's
    pre-softmax score on the masked input, softmaxed over the channels, is the weight (as
    pytorch-grad-cam computes it). Each pass runs ``channels_per_pass`` masks of every image at once.
    """

    name = "scorecam"
    needs_gradients = False

    def __init__(self, scores: Callable[[tf.Tensor], tf.Tensor], channels_per_pass: int = 8,
                 **kwargs: Normalise) -> None:
        super().__init__(**kwargs)
        self.scores, self.channels_per_pass = scores, channels_per_pass

    def channel_weights(self, inputs: CamInputs) -> tf.Tensor:
        features, per = inputs.features, self.channels_per_pass
        channels = features.shape[-1]
        padded = tf.pad(features, [[0, 0], [0, 0], [0, 0], [0, -channels % per]])
        h, w = features.shape[1], features.shape[2]
        chunks = tf.transpose(tf.reshape(padded, (-1, h, w, padded.shape[-1] // per, per)), (3, 0, 1, 2, 4))
        scores = tf.map_fn(lambda chunk: self._masked_scores(inputs, chunk), chunks,
                           fn_output_signature=tf.float32, parallel_iterations=1)
        scores = tf.reshape(tf.transpose(scores, (1, 0, 2)), (-1, padded.shape[-1]))[:, :channels]
        return tf.nn.softmax(scores, axis=-1)

    def _masked_scores(self, inputs: CamInputs, chunk: tf.Tensor) -> tf.Tensor:
        """Return (N, per) chosen-class scores of each image masked by each of its channels."""
        images = inputs.images
        masks = tf.image.resize(chunk, tf.shape(images)[1:3], method="bilinear")  # (N, H, W, per)
        low = tf.reduce_min(masks, axis=(1, 2), keepdims=True)
        high = tf.reduce_max(masks, axis=(1, 2), keepdims=True)
        masks = tf.math.divide_no_nan(masks - low, high - low)
        masked = images[:, None] * tf.transpose(masks, (0, 3, 1, 2))[..., None]  # (N, per, H, W, c)
        flat = tf.reshape(masked, tf.concat([[-1], tf.shape(images)[1:]], 0))
        scores = tf.reshape(self.scores(flat), (tf.shape(images)[0], self.channels_per_pass, -1))
        return tf.gather(scores, inputs.chosen, axis=2, batch_dims=1)


METHOD_CLASSES: dict[str, type[CamMethod]] = {
    cls.name: cls for cls in (ClassActivationMap, GradCam, GradCamPlusPlus, ScoreCam, LayerCam)
}
