"""NIfTI volumes evaluated slice by slice: labels and outlines from a BraTS-style mask volume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.data.annotations import Annotations
from pipeline.data.datasets import DataError
from pipeline.evaluate.evaluation import evaluate, evaluation_set
from pipeline.io.nifti import head_frames, read_volume
from pipeline.model.spec import load_spec
from tests.builders.cli import tumorlens
from tests.builders.volumes import CUBE, SHAPE, save_case, save_volume, tumor_case
from tests.pipeline.mldata import blob_image, bright_spot_model

TUMOR_FRAMES = set(range(SHAPE[2])[CUBE[2]])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return bright_spot_model(tmp_path_factory.mktemp("model"))


def frames_and_labels(examples) -> dict[int, int]:
    return {e.frame: e.label for e in examples}


def test_each_head_slice_is_one_example_labelled_by_its_mask_slice(tmp_path):
    image, _ = save_case(tmp_path / "cases", "BraTS2021_00001_flair", seg=None)
    save_volume(tmp_path / "cases" / "BraTS2021_00001_seg.nii.gz", tumor_case()[1])
    examples = evaluation_set(tmp_path)
    assert [e.path for e in examples] == [image] * len(examples)  # the mask is no image
    assert [e.frame for e in examples] == head_frames(read_volume(image))
    labels = frames_and_labels(examples)
    assert {k for k, label in labels.items() if label} == TUMOR_FRAMES
    assert {e.group for e in examples} == {"BraTS2021_00001"}  # the patient: slices stay together


def test_a_mask_beats_the_class_folder_and_a_lone_volume_takes_the_folder(tmp_path):
    save_case(tmp_path / "no", "outlined")  # in no/, but its mask shows a tumor
    save_case(tmp_path / "yes", "plain", seg=None)
    save_case(tmp_path / "no", "healthy", seg=None)
    by_name = {}
    for example in evaluation_set(tmp_path):
        by_name.setdefault(example.path.name, {})[example.frame] = example.label
    assert {k for k, label in by_name["outlined.nii.gz"].items() if label} == TUMOR_FRAMES
    assert set(by_name["plain.nii.gz"].values()) == {1}
    assert set(by_name["healthy.nii.gz"].values()) == {0}
    assert set(by_name) == {"outlined.nii.gz", "plain.nii.gz", "healthy.nii.gz"}


def test_images_and_volumes_evaluate_side_by_side(tmp_path):
    (tmp_path / "yes").mkdir()
    Image.fromarray(blob_image(np.random.default_rng(0), True)[0]).save(tmp_path / "yes" / "y0.png")
    save_case(tmp_path / "yes", "p1", seg="_mask")
    examples = evaluation_set(tmp_path)
    assert examples[0].path.name == "y0.png" and examples[0].frame is None
    assert len(examples) == 1 + len(head_frames(read_volume(tmp_path / "yes" / "p1.nii.gz")))


def test_mask_volumes_in_an_annotations_folder(tmp_path):
    save_case(tmp_path / "data", "p2", seg=None)
    save_volume(tmp_path / "outlines" / "p2_seg.nii.gz", tumor_case()[1])
    outlines = Annotations(tmp_path / "outlines")
    labels = frames_and_labels(evaluation_set(tmp_path / "data", outlines))
    assert {k for k, label in labels.items() if label} == TUMOR_FRAMES


def test_a_volume_without_a_mask_outside_the_class_folders_is_an_error(tmp_path):
    save_case(tmp_path / "scans", "lost", seg=None)
    with pytest.raises(DataError, match=r"lost\.nii\.gz lies outside the yes/no folders and has no "
                                         r"mask volume.*lost_seg\.nii\.gz"):
        evaluation_set(tmp_path)


def test_a_mask_of_another_shape_is_an_error_naming_both_files(tmp_path):
    image = save_volume(tmp_path / "p3.nii.gz", tumor_case()[0])
    save_volume(tmp_path / "p3_seg.nii.gz", tumor_case()[1][:-2])
    with pytest.raises(DataError, match=r"cannot evaluate .*p3\.nii\.gz: the mask volume "
                                         r".*p3_seg\.nii\.gz has shape \(38, 48, 30\) but its "
                                         r"image .*p3\.nii\.gz has \(40, 48, 30\)"):
        evaluation_set(image.parent)


def test_a_folder_with_neither_images_nor_volumes_is_still_an_error(tmp_path):
    with pytest.raises(DataError, match="no class folders"):
        evaluation_set(tmp_path)


@pytest.mark.parametrize("name", ["lps (DICOM-like, flipped)",
                                  "slices first (axial along the array's first axis)",
                                  "oblique (10 degrees about S)"])
def test_the_map_points_inside_the_mask_whatever_the_affine(model, tmp_path, name):
    save_case(tmp_path, "case_t1", affine=name, seg=None)
    save_volume(tmp_path / "case_seg.nii.gz", tumor_case()[1], name)
    examples = evaluation_set(tmp_path)
    report = evaluate(load_spec(model), examples, ("cam",), batch_size=8)
    classification = report["classification"]
    assert classification["n"] == len(examples) and report["skipped"] == []
    assert classification["accuracy"] == 1.0  # the bright cube is on the slices the mask marks
    assert classification["intervals"]["clusters"] == 1  # one patient
    scores = report["localisation"]["cam"]
    assert scores["n"] == len(TUMOR_FRAMES)
    # the pointing game forgives 15 px, so energy and IoU are what tell a flipped mask (both 0.0)
    assert scores["pointing"] == 1.0 and scores["energy"] > 0.9 and scores["iou"] > 0.5


def test_tumorlens_evaluate_a_volume_with_its_seg(model, tmp_path):
    save_case(tmp_path / "data", "patient", affine="lps (DICOM-like, flipped)")
    report = json.loads(tumorlens("evaluate", model, tmp_path / "data", "--json").stdout)
    frames = head_frames(read_volume(tmp_path / "data" / "patient.nii.gz"))
    assert report["classification"]["n"] == len(frames)
    assert report["classification"]["confusion_matrix"] == [[len(frames) - len(TUMOR_FRAMES), 0],
                                                            [0, len(TUMOR_FRAMES)]]
    assert report["localisation"]["gradcam"]["n"] == len(TUMOR_FRAMES)
    assert report["localisation"]["gradcam"]["pointing"] == 1.0
    assert report["localisation"]["gradcam"]["energy"] > 0.9
    lost = tmp_path / "lost"
    save_case(lost, "nomask", seg=None)
    result = tumorlens("evaluate", model, lost, expect=1)
    assert "has no mask volume" in result.output and "nomask_seg.nii.gz" in result.output
