"""Mask volumes named as BraTS names them, found beside their image or in a folder, never images."""

from __future__ import annotations

import pytest

from pipeline.data.annotations import Annotations, is_mask_volume, mask_volume_names, volume_case
from pipeline.data.datasets import Example, evaluation_volumes


@pytest.mark.parametrize("image, case, mask", [
    ("patient.nii.gz", "patient", "patient_seg.nii.gz"),
    ("patient.nii", "patient", "patient_seg.nii.gz"),
    ("BraTS2021_00000_flair.nii.gz", "BraTS2021_00000", "BraTS2021_00000_seg.nii.gz"),
    ("BraTS20_Training_001_t1ce.nii.gz", "BraTS20_Training_001", "BraTS20_Training_001_seg.nii"),
    ("BraTS2021_00000_t1.nii.gz", "BraTS2021_00000", "BraTS2021_00000_seg.nii.gz"),
    ("BraTS2021_00000_T2.NII.GZ", "BraTS2021_00000", "BraTS2021_00000_seg.nii.gz"),
    ("BraTS-GLI-00000-000-t2f.nii.gz", "BraTS-GLI-00000-000", "BraTS-GLI-00000-000-seg.nii.gz"),
])
def test_mask_volume_names_follow_brats(image, case, mask):
    names = mask_volume_names(image)
    assert mask in names and names[0].endswith("_seg.nii.gz")
    assert f"{image.lower().split('.nii')[0]}_mask.nii.gz" in [n.lower() for n in names]
    assert volume_case(image) == case
    assert not is_mask_volume(image) and is_mask_volume(mask)


def test_only_nifti_names_have_mask_volumes():
    assert mask_volume_names("y12.jpg") == [] and not is_mask_volume("y12_mask.png")
    assert is_mask_volume("x_mask.nii.gz") and is_mask_volume("X_SEG.nii")
    assert volume_case("t1_study.nii.gz") == "t1_study"  # only a trailing modality names a case


def test_a_mask_volume_is_found_beside_its_image_or_in_the_folder(tmp_path):
    beside, elsewhere, outlines = tmp_path / "a", tmp_path / "b", tmp_path / "outlines"
    for folder in (beside, elsewhere, outlines):
        folder.mkdir()
    (beside / "case_flair.nii.gz").touch()
    (beside / "case_seg.nii.gz").touch()
    (elsewhere / "other.nii").touch()
    (outlines / "other_mask.nii.gz").touch()
    assert Annotations().mask_volume(beside / "case_flair.nii.gz") == beside / "case_seg.nii.gz"
    assert Annotations().mask_volume(elsewhere / "other.nii") is None
    found = Annotations(outlines)
    assert found.mask_volume(elsewhere / "other.nii") == outlines / "other_mask.nii.gz"
    assert found.has(elsewhere / "other.nii") and not Annotations().has(elsewhere / "other.nii")


def test_evaluation_volumes_take_class_folder_labels_and_skip_masks(tmp_path):
    for name in ("yes/p1.nii.gz", "yes/p1_seg.nii.gz", "no/sub/p2.nii", "BraTS_1/BraTS_1_t2.nii.gz",
                 "BraTS_1/BraTS_1_seg.nii.gz", "loose.nii.gz", "yes/._p1.nii.gz", "yes/y1.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    found = {path.relative_to(tmp_path).as_posix(): label
             for path, label in evaluation_volumes(tmp_path)}
    assert found == {"yes/p1.nii.gz": 1, "no/sub/p2.nii": 0, "BraTS_1/BraTS_1_t2.nii.gz": None,
                     "loose.nii.gz": None}


def test_evaluation_volumes_of_a_prepared_folder_come_from_test(tmp_path):
    for split in ("TRAIN", "VALIDATION", "TEST"):
        (tmp_path / split / "yes").mkdir(parents=True)
        (tmp_path / split / "yes" / f"{split}.nii.gz").touch()
    assert evaluation_volumes(tmp_path) == [(tmp_path / "TEST" / "yes" / "TEST.nii.gz", 1)]


def test_an_example_is_its_file_first_frame_unless_told(tmp_path):
    assert Example(tmp_path / "a.png", 1, "a").frame is None
    assert Example(tmp_path / "a.nii.gz", 1, "a", frame=7).frame == 7
