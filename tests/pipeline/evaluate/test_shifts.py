"""Controlled shifts: each transform on its own, the evaluation hook, and the table of them all."""

import math

import numpy as np
import pytest

from pipeline.data import datasets
from pipeline.data.annotations import Annotations
from pipeline.evaluate.evaluation import evaluate
from pipeline.evaluate.shifts import MODERATE, SHIFTS, TRANSFORMS, Shift, shift_table
from pipeline.model.spec import load_spec
from tests.pipeline.mldata import bright_spot_model, make_prepared

GEOMETRIC = ("resolution", "padding", "crop", "off-centre")
EVERY_SHIFT = [(name, severity) for name, levels in SHIFTS.items() for severity in levels]
# The severity of each family that changes nothing (JPEG has none: every quality re-encodes).
IDENTITY = {"padding": 0.0, "crop": 1.0, "off-centre": 0.0, "gamma": 1.0, "contrast": 1.0,
            "bias-field": 0.0, "inversion": 0.0, "noise": 0.0, "blur": 0.0}


def scan(channels: int = 0, seed: int = 0, size=(60, 80)) -> tuple[np.ndarray, np.ndarray]:
    """Return a noisy dark scan with a bright square, and the square as its mask."""
    rng = np.random.default_rng(seed)
    pixels = rng.normal(50, 8, size).clip(0, 255)
    mask = np.zeros(size, dtype=bool)
    mask[20:36, 44:60] = True
    pixels[mask] = 230
    pixels = pixels.astype(np.uint8)
    return (np.repeat(pixels[..., None], 3, axis=2) if channels == 3 else pixels), mask


def gray(pixels: np.ndarray) -> np.ndarray:
    return pixels if pixels.ndim == 2 else pixels.mean(axis=2)


@pytest.mark.parametrize("name, severity", EVERY_SHIFT)
@pytest.mark.parametrize("channels", (0, 3))
def test_every_shift_keeps_dtype_channels_and_mask_shape(name, severity, channels):
    pixels, mask = scan(channels)
    shifted, moved = Shift(name, severity)(pixels, mask)
    assert shifted.dtype == np.uint8 and shifted.ndim == pixels.ndim
    assert shifted.shape[2:] == pixels.shape[2:]
    assert moved.dtype == bool and moved.shape == shifted.shape[:2]
    assert Shift(name, severity)(pixels, None)[1] is None  # a scan without outline stays without


@pytest.mark.parametrize("name, severity", EVERY_SHIFT)
def test_every_shift_is_deterministic_and_leaves_its_input_alone(name, severity):
    pixels, mask = scan(3)
    before = pixels.copy(), mask.copy()
    first, second = Shift(name, severity)(pixels, mask), Shift(name, severity)(pixels, mask)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert np.array_equal(pixels, before[0]) and np.array_equal(mask, before[1])


@pytest.mark.parametrize("name", ("noise", "bias-field", "off-centre"))
def test_random_draws_differ_between_scans_and_severities(name):
    one = scan(seed=1)[0]
    two = one.copy()
    two[0, 0] ^= 1  # another scan, all but alike: only a fresh draw changes the rest of it

    def residual(pixels, severity):
        return gray(Shift(name, severity)(pixels, None)[0]) - gray(pixels)

    low, high = SHIFTS[name][0], SHIFTS[name][-1]
    assert np.mean(residual(one, low) != residual(two, low)) > 0.1
    assert np.mean(residual(one, low) != residual(one, high)) > 0.1


@pytest.mark.parametrize("name, severity", IDENTITY.items())
@pytest.mark.parametrize("channels", (0, 3))
def test_the_identity_severity_changes_nothing(name, severity, channels):
    pixels, mask = scan(channels)
    shifted, moved = Shift(name, severity)(pixels, mask)
    assert np.array_equal(shifted, pixels) and np.array_equal(moved, mask)


def test_resolution_at_the_scans_own_size_changes_nothing():
    pixels, mask = scan()
    shifted, moved = Shift("resolution", 80)(pixels, mask)
    assert np.array_equal(shifted, pixels) and np.array_equal(moved, mask)


@pytest.mark.parametrize("name, severity", [(n, s) for n, s in EVERY_SHIFT if n in GEOMETRIC])
@pytest.mark.parametrize("channels", (0, 3))
def test_geometric_shifts_keep_the_mask_on_the_bright_square(name, severity, channels):
    pixels, mask = scan(channels)
    shifted, moved = Shift(name, severity)(pixels, mask)
    bright = gray(shifted) > 140
    assert moved.any()
    assert (bright & moved).sum() / (bright | moved).sum() > 0.9  # the same region, moved alike
    assert gray(shifted)[moved].mean() > 200 and gray(shifted)[~moved].mean() < 70


def test_geometric_shifts_resize_as_asked():
    pixels, mask = scan()  # 60 x 80
    assert Shift("resolution", 150)(pixels, mask)[0].shape == (112, 150)
    assert Shift("resolution", 40)(pixels, mask)[0].shape == (30, 40)
    padded = Shift("padding", 0.5)(pixels, mask)[0]
    assert padded.shape == (90, 120) and padded[:15].max() == 0 and padded[:, :20].max() == 0
    assert Shift("crop", 0.5)(pixels, mask)[0].shape == (30, 40)
    moved = Shift("off-centre", 0.3)(pixels, mask)[0]
    assert moved.shape == pixels.shape and (moved == 0).mean() > 0.3  # black where the head left


@pytest.mark.parametrize("name", [name for name in SHIFTS if name not in GEOMETRIC])
@pytest.mark.parametrize("channels", (0, 3))
def test_intensity_noise_blur_and_jpeg_change_the_pixels_not_the_mask(name, channels):
    pixels, mask = scan(channels)
    for severity in SHIFTS[name]:
        shifted, kept = Shift(name, severity)(pixels, mask)
        assert shifted.shape == pixels.shape
        assert not np.array_equal(shifted, pixels)
        assert np.array_equal(kept, mask)


def test_intensity_curves_do_what_they_say():
    pixels, _ = scan()
    levels = pixels.astype(float)
    assert np.array_equal(Shift("inversion", 1.0)(pixels, None)[0], 255 - pixels)
    half = Shift("inversion", 0.5)(pixels, None)[0].astype(float)
    assert half.std() > 10  # not the flat grey a 50 % blend with 255 - x would be
    assert half[pixels > 200].mean() < half[pixels < 100].mean()  # bright and dark swapped
    darker, brighter = Shift("gamma", 2.2)(pixels, None)[0], Shift("gamma", 0.7)(pixels, None)[0]
    assert darker.mean() < levels.mean() < brighter.mean()
    lower = Shift("contrast", 0.4)(pixels, None)[0].astype(float)
    assert lower.std() == pytest.approx(0.4 * levels.std(), rel=0.05)
    assert lower.mean() == pytest.approx(levels.mean(), abs=1)
    assert Shift("blur", 4)(pixels, None)[0].std() < levels.std()
    noisy = Shift("noise", 20)(pixels, None)[0].astype(float)
    assert (noisy - levels)[(pixels > 20) & (pixels < 200)].std() == pytest.approx(20, rel=0.15)
    gray_rgb = Shift("noise", 10)(scan(3)[0], None)[0]
    assert np.array_equal(gray_rgb[..., 0], gray_rgb[..., 2])  # a gray scan stays gray


def test_the_bias_field_is_smooth_and_grows_with_its_coefficient():
    flat = np.full((64, 64), 100, dtype=np.uint8)
    fields = [Shift("bias-field", c)(flat, None)[0].astype(float) / 100 for c in SHIFTS["bias-field"]]
    spreads = [np.log(field).std() for field in fields]
    assert spreads == sorted(spreads) and spreads[0] > 0.02
    assert all(np.abs(np.diff(f, axis=1)).max() < 0.1 for f in fields)  # smooth: no steps


def test_moderate_is_the_middle_severity_and_unknown_names_are_refused():
    assert set(MODERATE) == set(SHIFTS) == set(TRANSFORMS)
    assert all(MODERATE[name] == levels[len(levels) // 2] for name, levels in SHIFTS.items())
    with pytest.raises(ValueError, match="unknown shift 'fog'"):
        Shift("fog", 1)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("data"), {"TEST": 6})


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return load_spec(bright_spot_model(tmp_path_factory.mktemp("model")))


def without_clock(report: dict) -> dict:
    return {key: value for key, value in report.items() if key != "seconds"}


def test_no_transform_gives_the_report_of_before(spec, prepared):
    examples = datasets.find_split(prepared, "TEST")
    plain = evaluate(spec, examples, ("gradcam",), Annotations(), 4)
    none = evaluate(spec, examples, ("gradcam",), Annotations(), 4, transform=None)
    assert without_clock(none) == without_clock(plain)
    identity = evaluate(spec, examples, ("gradcam",), Annotations(), 4, transform=lambda p, m: (p, m))
    assert without_clock(identity) == without_clock(plain)


def test_the_hook_moves_the_mask_with_the_scan(spec, prepared):
    examples = datasets.find_split(prepared, "TEST")
    energy = lambda transform: evaluate(spec, examples, ("gradcam",),  # noqa: E731
                                        transform=transform)["localisation"]["gradcam"]["energy"]
    unshifted, moved = energy(None), energy(Shift("off-centre", 0.2))
    assert moved > 0.6 * unshifted  # the heatmap's energy still falls inside the moved tumor

    def pixels_only(pixels, mask):  # a faulty shift: the scan moves, its outline stays
        return Shift("off-centre", 0.2)(pixels, None)[0], mask
    assert energy(pixels_only) < 0.5 * moved


@pytest.fixture(scope="module")
def table(spec, prepared):
    return shift_table(spec, datasets.find_split(prepared, "TEST"), Annotations(), batch_size=6)


def test_the_table_has_the_unshifted_row_and_one_per_shift_and_severity(table):
    rows = table["rows"]
    assert [(r["shift"], r["severity"]) for r in rows] == [("none", None), *EVERY_SHIFT]
    assert table["scans"] == 12 and table["skipped"] == 0 and table["method"] == "gradcam"
    for row in rows:
        assert row["scans"] == 12
        for key in ("accuracy", "delta_accuracy", "sensitivity", "specificity"):
            assert math.isfinite(row[key]), (row["shift"], key)
        assert row["localised"] == 0 or 0.0 <= row["pointing"] <= 1.0
        assert row["moderate"] == (row["shift"] != "none" and MODERATE[row["shift"]] == row["severity"])
    assert (rows[0]["accuracy"], rows[0]["delta_accuracy"], rows[0]["pointing"]) == (1.0, 0.0, 1.0)


def test_destroying_the_image_costs_accuracy_and_is_named(table):
    by_shift = {(r["shift"], r["severity"]): r for r in table["rows"]}
    inverted = by_shift[("inversion", 1.0)]  # the dark background turns bright: 'tumor' everywhere
    assert inverted["accuracy"] <= 0.6 and inverted["delta_accuracy"] <= -0.4
    assert inverted["sensitivity"] == 1.0 and inverted["specificity"] <= 0.2
    assert by_shift[("padding", 0.25)]["accuracy"] == 1.0  # black border: the spot is still found
    over = [(r["shift"], r["severity"]) for r in table["over_bar"]]
    assert over == [(r["shift"], r["severity"]) for r in table["rows"]
                    if r["moderate"] and r["delta_accuracy"] < -0.03]
    assert all(r["moderate"] for r in table["over_bar"])


def test_a_subset_of_shifts_severities_and_scans(spec, prepared):
    small = shift_table(spec, datasets.find_split(prepared, "TEST"), Annotations(),
                        shifts=("noise", "jpeg"), severities={"noise": (1,)}, limit=5)
    assert [(r["shift"], r["severity"]) for r in small["rows"]] == [
        ("none", None), ("noise", 1), ("jpeg", 75), ("jpeg", 50), ("jpeg", 25)]
    assert small["scans"] == 5 and not small["rows"][1]["moderate"]
    with pytest.raises(ValueError, match="unknown shift"):
        shift_table(spec, datasets.find_split(prepared, "TEST"), shifts=("fog",))
