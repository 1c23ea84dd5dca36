"""Tiny real training runs: what they write loads, resumes continue, augmentation stays in training."""

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from pipeline.data import datasets
from pipeline.train import training
from pipeline.explain.analysis import METHODS, Analyzer
from pipeline.train.augment import AUGMENTATIONS, build_augmenter
from pipeline.model.spec import SpecError, load_spec
from tests.pipeline.mldata import make_prepared

SIZE = 32


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("prepared"), {"TRAIN": 16, "VALIDATION": 6, "TEST": 6})


def tiny_config(**overrides) -> training.TrainConfig:
    values = dict(input_size=SIZE, epochs=2, batch_size=8, width=4, patience=5, seed=1)
    return training.TrainConfig(**{**values, **overrides})


class StopAfter(keras.callbacks.Callback):
    """Interrupt training after an epoch, as a killed process would."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


class SeenEpochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


@pytest.fixture(scope="module")
def lens_card(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("lens")
    return out, training.train(prepared, out, tiny_config(augment=AUGMENTATIONS))


@pytest.mark.slow
def test_lens_run_writes_a_spec_the_analyzer_accepts(lens_card):
    out, _ = lens_card
    spec = load_spec(out)
    assert spec.input_size == (SIZE, SIZE) and spec.color_mode == "grayscale"
    assert spec.class_names == ("no_tumor", "tumor") and spec.positive_classes == ("tumor",)
    analyzer = Analyzer(spec, "gradcam")
    scan = np.full((48, 48, 3), 90, dtype=np.uint8)
    result = analyzer.analyze(np.stack([analyzer.prepare(scan)] * 2))
    assert result.probabilities.shape == (2, 2)
    assert np.allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert result.cams.shape == (2, SIZE // 8, SIZE // 8)  # lens keeps 1/8 of the input's resolution


@pytest.mark.slow
def test_lens_card_holds_data_config_history_and_test_metrics(lens_card, prepared):
    out, card = lens_card
    assert json.loads((out / "model_card.json").read_text()) == card
    assert card["data"]["manifest_sha256"] == datasets.manifest_digest(prepared)
    assert card["data"]["counts"][str(prepared)]["TRAIN"] == {"no_tumor": 16, "tumor": 16}
    assert card["config"]["augment"] == list(AUGMENTATIONS)
    assert [row["epoch"] for row in card["history"]] == [0, 1]
    assert card["cam_method"] in METHODS
    assert set(card["validation_localisation"]) <= set(METHODS)
    test = card["test"][prepared.name]
    classification = test["classification"]
    assert classification["n"] == 12
    assert 0.0 <= classification["accuracy"] <= 1.0 and 0.0 <= classification["ece"] <= 1.0
    assert sum(map(sum, classification["confusion_matrix"])) == 12
    assert test["localisation"][card["cam_method"]]["n"] == 6  # the six TEST tumors have masks
    assert test["localisation"]["centre_baseline"]["n"] == 6
    assert test["neurons"]["n_neurons"] == 5 * 4  # lens's last conv layer has 5 x width filters


@pytest.mark.slow
def test_the_saved_model_carries_no_augmentation(lens_card):
    out, _ = lens_card
    model = keras.models.load_model(out / "model.keras", compile=False)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert not any(kind.startswith("Random") for kind in kinds)
    assert "LayerNormalization" in kinds  # the per-image standardisation travels with the model


@pytest.mark.slow
def test_application_architecture_trains_with_random_weights(prepared, tmp_path):
    card = training.train(prepared, tmp_path, tiny_config(arch="mobilenetv2", epochs=1),
                       select_method=False)
    spec = load_spec(tmp_path)
    assert spec.color_mode == "rgb" and spec.preprocessing == "symmetric"
    assert card["cam_method"] == "gradcam"
    assert len(card["history"]) == 1
    analyzer = Analyzer(spec, "gradcam")
    batch = np.stack([analyzer.prepare(np.zeros((40, 40, 3), np.uint8))])
    assert analyzer.analyze(batch).probabilities.shape == (1, 2)


@pytest.mark.slow
def test_resume_continues_the_epoch_count(prepared, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        training.fit(prepared, tmp_path, tiny_config(epochs=4), extra_callbacks=[StopAfter(1)])
    assert [row["epoch"] for row in training.read_history(tmp_path / "history.csv")] == [0, 1]
    seen = SeenEpochs()
    _, history, _ = training.fit(prepared, tmp_path, tiny_config(epochs=4), resume=True,
                              extra_callbacks=[seen])
    assert seen.epochs == [2, 3]
    assert [row["epoch"] for row in history] == [0, 1, 2, 3]
    assert not (tmp_path / "backup").exists()  # a finished run leaves no half-done checkpoint


class SeenRates(keras.callbacks.Callback):
    """Record the optimizer's learning rate as each epoch begins."""

    def __init__(self):
        super().__init__()
        self.rates = {}

    def on_epoch_begin(self, epoch, logs=None):
        self.rates[epoch] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def test_cosine_schedule_warms_up_for_one_epoch_then_decays_to_one_percent():
    schedule = training.learning_rate(training.TrainConfig(learning_rate=2e-3, epochs=10,
                                                     schedule="cosine"), steps_per_epoch=5)
    rates = [float(schedule(step)) for step in range(51)]
    assert rates[0] == pytest.approx(2e-4)
    assert rates[5] == pytest.approx(2e-3)  # the peak, after one epoch of warm-up
    assert all(a < b for a, b in zip(rates[:5], rates[1:6]))
    assert all(a > b for a, b in zip(rates[5:50], rates[6:51]))
    assert rates[50] == pytest.approx(2e-5)


def test_plateau_schedule_is_the_plain_rate_and_an_unknown_one_is_named():
    assert training.learning_rate(training.TrainConfig(learning_rate=3e-4), 10) == 3e-4
    with pytest.raises(ValueError, match='unknown learning-rate schedule "step"; choose one of '
                                         'plateau, cosine'):
        training.learning_rate(training.TrainConfig(schedule="step"), 10)


@pytest.mark.slow
def test_a_resumed_cosine_run_continues_on_the_same_curve(prepared, tmp_path):
    config = tiny_config(epochs=3, schedule="cosine", learning_rate=1e-2)
    whole = SeenRates()
    training.fit(prepared, tmp_path / "whole", config, extra_callbacks=[whole])
    with pytest.raises(KeyboardInterrupt):
        training.fit(prepared, tmp_path / "cut", config, extra_callbacks=[StopAfter(0)])
    resumed = SeenRates()
    training.fit(prepared, tmp_path / "cut", config, resume=True, extra_callbacks=[resumed])
    steps = 2  # 16 TRAIN images in batches of 8
    curve = training.learning_rate(config, steps)
    assert whole.rates == pytest.approx({e: float(curve(e * steps)) for e in range(3)})
    assert resumed.rates == pytest.approx({1: whole.rates[1], 2: whole.rates[2]})


@pytest.mark.slow
def test_a_fresh_run_forgets_an_interrupted_one(prepared, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        training.fit(prepared, tmp_path, tiny_config(epochs=3), extra_callbacks=[StopAfter(0)])
    seen = SeenEpochs()
    _, history, _ = training.fit(prepared, tmp_path, tiny_config(epochs=1), extra_callbacks=[seen])
    assert seen.epochs == [0] and [row["epoch"] for row in history] == [0]


def test_augmentation_changes_images_only_in_training():
    augmenter = build_augmenter(AUGMENTATIONS, seed=3)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, SIZE, SIZE, 1)).astype(np.float32)
    names = {type(layer).__name__ for layer in augmenter.layers}
    assert {"RandomFlip", "RandomRotation", "RandomZoom", "RandomContrast", "RandomGamma",
            "RandomNoise", "RandomGaussianBlur"} <= names
    assert np.array_equal(np.asarray(augmenter(images, training=False)), images)
    changed = np.asarray(augmenter(images, training=True))
    assert changed.shape == images.shape and not np.allclose(changed, images)
    assert changed.min() >= 0.0 and changed.max() <= 255.0


def test_unknown_augmentation_is_named():
    with pytest.raises(ValueError, match="sharpen"):
        build_augmenter(["flip", "sharpen"])


def test_only_the_training_pipeline_is_augmented(prepared, tmp_path):
    config = tiny_config(augment=("rotation", "noise"))
    data = training.load_splits([prepared], (SIZE, SIZE), "grayscale", tmp_path)
    train_ds, val_ds = training.make_datasets(data, config, "unit")
    val_images, _ = next(iter(val_ds))
    assert np.allclose(val_images.numpy(), data.val_x[:8] / 255.0)
    first_batch, _ = next(iter(train_ds))
    assert first_batch.shape == (8, SIZE, SIZE, 1)
    # No training image comes out exactly as stored: rotation and noise always move something.
    stored = data.train_x.reshape(len(data.train_x), -1) / 255.0
    for image in first_batch.numpy().reshape(8, -1):
        assert np.min(np.abs(stored - image).max(axis=1)) > 1e-3


def test_class_weights_balance_the_classes():
    weights = training.class_weights(np.array([0, 0, 0, 1]))
    assert weights == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}


def test_decoded_arrays_are_cached_and_reused(prepared, tmp_path):
    examples = datasets.find_split(prepared, "TEST")
    images, labels = datasets.load_arrays(examples, (SIZE, SIZE), "grayscale", tmp_path)
    assert images.shape == (12, SIZE, SIZE, 1) and images.dtype == np.uint8
    assert labels.tolist() == [1] * 6 + [0] * 6  # yes, then no
    [cache] = tmp_path.glob("images-*.npy")
    marked = images.copy()
    marked[0, 0, 0, 0] = 7 if images[0, 0, 0, 0] != 7 else 8
    np.save(cache, marked)  # a second load must come from the cache, not from the files
    again, _ = datasets.load_arrays(examples, (SIZE, SIZE), "grayscale", tmp_path)
    assert np.array_equal(again, marked)


def test_split_by_case_keeps_each_patient_in_one_split(tmp_path):
    source = tmp_path / "lgg"
    for case in range(10):
        for label in ("tumor", "no_tumor"):
            folder = source / label / f"case{case}"
            folder.mkdir(parents=True)
            for index in range(3):
                Image.new("L", (8, 8), 10 * index).save(folder / f"case{case}_{index}.jpg")
                if label == "tumor":
                    Image.new("L", (8, 8), 255).save(folder / f"case{case}_{index}_mask.png")
    counts = datasets.split_by_case(source, tmp_path / "split", (0.6, 0.2, 0.2), seed=4)
    assert counts == {"TRAIN": 36, "VALIDATION": 12, "TEST": 12}
    with open(tmp_path / "split" / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    split_of_case = {}
    for row in rows:
        assert split_of_case.setdefault(row["case"], row["split"]) == row["split"]
    assert len(split_of_case) == 10
    test_yes = sorted(p.name for p in (tmp_path / "split" / "TEST" / "yes").iterdir())
    assert len(test_yes) == 12  # six slices and their six masks
    assert len(datasets.find_split(tmp_path / "split", "TEST")) == 12


def test_a_folder_without_class_folders_is_refused(tmp_path):
    with pytest.raises(datasets.DataError, match="no class folders"):
        datasets.find_examples(tmp_path)
    with pytest.raises(datasets.DataError, match="prepare-data"):
        datasets.find_split(tmp_path, "TRAIN")


@pytest.mark.slow
def test_extra_domain_joins_training_and_gets_its_own_test_report(prepared, tmp_path):
    other = make_prepared(tmp_path / "other", {"TRAIN": 4, "VALIDATION": 2, "TEST": 3}, seed=5)
    config = tiny_config(epochs=1, extra_domains=[str(other)])
    card = training.train(prepared, tmp_path / "run", config, select_method=False)
    assert set(card["test"]) == {prepared.name, other.name}
    assert card["test"][other.name]["classification"]["n"] == 6
    assert card["data"]["counts"][str(other)]["TRAIN"] == {"no_tumor": 4, "tumor": 4}
    assert card["data"]["extra_domains"] == {str(other): datasets.manifest_digest(other)}


def test_a_local_weights_file_initialises_the_backbone(tmp_path):
    from pipeline.train.architectures import build_application

    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    base.save_weights(tmp_path / "backbone.weights.h5")
    model = build_application("mobilenetv2", (32, 32), weights=str(tmp_path / "backbone.weights.h5"))
    loaded = model.get_layer(base.name)
    assert all(np.array_equal(a, b) for a, b in zip(base.get_weights(), loaded.get_weights()))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_application("mobilenetv2", (32, 32), weights=str(tmp_path / "missing.h5"))


class WeightsAtStart(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = [np.array(w) for w in self.model.get_weights()]


@pytest.mark.slow
def test_fine_tuning_starts_from_the_trained_model_and_names_it_in_the_card(lens_card, prepared,
                                                                            tmp_path):
    trained_dir, _ = lens_card
    trained = keras.models.load_model(trained_dir / "model.keras", compile=False)
    start = WeightsAtStart()
    config = tiny_config(epochs=1, input_size=SIZE + 8, augment=AUGMENTATIONS, init=str(trained_dir))
    training.fit(prepared, tmp_path / "tuned", config, extra_callbacks=[start])
    assert len(start.weights) == len(trained.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(start.weights, trained.get_weights()))
    card = training.train(prepared, tmp_path / "tuned", tiny_config(epochs=1, init=str(trained_dir)),
                       select_method=False)
    assert card["init"] == {"model": str(trained_dir), "digest": load_spec(trained_dir).digest()}
    assert card["config"]["init"] == str(trained_dir)


@pytest.mark.slow
def test_fine_tuning_from_another_architecture_names_the_difference(lens_card, prepared, tmp_path):
    trained_dir, _ = lens_card
    with pytest.raises(ValueError, match=r"does not fit the model being trained.*--width"):
        training.fit(prepared, tmp_path, tiny_config(epochs=1, width=8, init=str(trained_dir / "model.json")))
    with pytest.raises(SpecError):
        training.fit(prepared, tmp_path, tiny_config(epochs=1, init=str(tmp_path / "missing")))


@pytest.mark.slow
def test_a_target_sensitivity_writes_the_operating_point_chosen_on_validation(prepared, tmp_path):
    from pipeline.evaluate.operating_point import analyse_split

    card = training.train(prepared, tmp_path, tiny_config(epochs=1, target_sensitivity=0.9),
                          select_method=False)
    spec, point = load_spec(tmp_path), card["operating_point"]
    assert spec.threshold == point["threshold"] and 0 < spec.threshold < 1
    assert point["chosen_on"] == "VALIDATION" and point["sensitivity"] >= 0.9
    labels, probability, _ = analyse_split(Analyzer(spec), [prepared], "VALIDATION")  # chosen on these
    assert ((probability >= spec.threshold)[labels == 1]).mean() == point["sensitivity"]
    test = card["test"][prepared.name]["classification"]
    assert test["threshold"] == spec.threshold  # TEST is measured at the operating point
