"""CAM guidance by outlines: the loss's known answers and a tiny guided training run."""

import math

import keras
import numpy as np
import pytest

from pipeline.train import guidance, training
from pipeline.data.annotations import Annotations
from pipeline.train.card import spec_dict
from pipeline.model.spec import load_spec, write_spec
from tests.pipeline.mldata import make_prepared


def test_spatial_cross_entropy_known_answers():
    target = np.zeros((3, 4, 4, 1), np.float32)
    target[0, 1, 2] = 1.0  # one position
    target[1, 0:2, 0:2] = 2.0  # four positions, any scale
    logits = np.zeros((3, 4, 4), np.float32)
    loss = np.asarray(guidance.spatial_cross_entropy(target, logits))
    assert loss[0] == pytest.approx(math.log(16))  # a flat map gives every position 1/16
    assert loss[1] == pytest.approx(math.log(16))
    assert loss[2] == 0.0  # no outline, no loss
    peaked = logits.copy()
    peaked[0, 1, 2] = 10.0
    assert np.asarray(guidance.spatial_cross_entropy(target, peaked))[0] < 0.01
    shifted = np.asarray(guidance.spatial_cross_entropy(target, peaked + 5.0))
    assert shifted[0] == pytest.approx(np.asarray(guidance.spatial_cross_entropy(target, peaked))[0], abs=1e-5)


def test_guided_model_shares_weights_and_exposes_the_tumor_map():
    from pipeline.train.architectures import build_lens

    classifier = build_lens((32, 32), width=4)
    guided = guidance.guided_model(classifier)
    assert {id(w) for w in guided.weights} == {id(w) for w in classifier.weights}
    images = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 1)).astype(np.float32)
    outputs = guided(images, training=False)
    assert outputs["class_map"].shape == (2, 4, 4)
    features = keras.Model(classifier.input, classifier.get_layer("gap").input)(images)
    kernel = classifier.get_layer("predictions").kernel.numpy()[:, 1]
    assert np.allclose(outputs["class_map"], np.einsum("bhwc,c->bhw", features, kernel), atol=1e-5)
    assert np.allclose(outputs["predictions"], classifier(images, training=False), atol=1e-6)


@pytest.mark.slow
def test_guided_training_writes_a_plain_classifier(tmp_path):
    data = make_prepared(tmp_path / "data", {"TRAIN": 12, "VALIDATION": 4, "TEST": 4})
    config = training.TrainConfig(input_size=32, epochs=2, batch_size=8, width=4, mask_weight=1.0,
                               augment=("flip", "rotation", "gamma"))
    model, history, _ = training.fit(data, tmp_path / "run", config, annotations=Annotations())
    assert {"class_map_loss", "predictions_accuracy", "val_class_map_loss"} <= set(history[0])
    assert history[0]["class_map_loss"] > 0  # the tumors' masks were found and used
    saved = keras.models.load_model(tmp_path / "run" / "model.keras", compile=False)
    assert "class_map" not in [layer.name for layer in saved.layers]
    write_spec(spec_dict(config, "guided"), tmp_path / "run")
    assert load_spec(tmp_path / "run").input_size == (32, 32)
