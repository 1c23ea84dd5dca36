"""NIfTI volumes: axial slices found from the affine, shown as radiologists view them."""

from __future__ import annotations

import gzip

import nibabel
import numpy as np
import pytest

from pipeline.io.nifti import axial_view, head_frames, looks_like_nifti, read_mask_volume, read_volume
from pipeline.io.scans import ScanError, is_scan_candidate, read_scan
from tests.builders.volumes import (AFFINES, CUBE, SHAPE, head_volume, save_case, save_volume, stored_as,
                                    tumor_case)

def save(path, volume: np.ndarray, affine: np.ndarray, version=nibabel.Nifti1Image) -> str:
    nibabel.save(version(volume, affine), str(path))
    return str(path)


def brightest(scan) -> tuple[int, int]:
    """Return the (row, column) of a slice's brightest pixel: the head's right anterior edge."""
    row, col = np.unravel_index(int(np.argmax(scan.pixels)), scan.pixels.shape)
    return int(row), int(col)


@pytest.mark.parametrize("name", AFFINES)
def test_slices_are_axial_inferior_to_superior_whatever_the_stored_orientation(tmp_path, name):
    data, affine = stored_as(AFFINES[name], head_volume())
    scans = read_scan(save(tmp_path / "head.nii.gz", data, affine))
    frames = [s.frame for s in scans]
    assert frames == sorted(frames) and 0 < len(scans) < SHAPE[2]  # the empty end slices left out
    assert all(s.pixels.shape == (SHAPE[1], SHAPE[0]) and s.pixels.dtype == np.uint8 for s in scans)
    means = [s.pixels[s.pixels > 0].mean() for s in scans]
    assert means == sorted(means)  # brighter upwards: the frames run inferior to superior
    for scan in scans[2:-2]:
        row, col = brightest(scan)
        assert row < SHAPE[1] // 2  # anterior is up
        assert col < SHAPE[0] // 2  # the patient's right is on the image's left
    assert scans[0].info["format"] == "NIfTI" and scans[0].info["slice"] == str(scans[0].frame)


def test_plain_nii_gzipped_and_nifti2_read_alike(tmp_path):
    volume = head_volume()
    plain = read_scan(save(tmp_path / "a.nii", volume, np.eye(4)))
    zipped = read_scan(save(tmp_path / "b.nii.gz", volume, np.eye(4)))
    second = read_scan(save(tmp_path / "c.nii", volume, np.eye(4), nibabel.Nifti2Image))
    for other in (zipped, second):
        assert [s.frame for s in other] == [s.frame for s in plain]
        assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(plain, other))


def test_a_4d_volume_gives_its_first_volume(tmp_path):
    volume = head_volume()
    series = np.stack([volume, np.zeros_like(volume)], axis=-1)
    first = read_scan(save(tmp_path / "t.nii.gz", series, np.eye(4)))
    alone = read_scan(save(tmp_path / "v.nii.gz", volume, np.eye(4)))
    assert [s.frame for s in first] == [s.frame for s in alone] and first


def test_names_contents_and_damage(tmp_path):
    path = save(tmp_path / "head.nii.gz", head_volume(), np.eye(4))
    assert is_scan_candidate(path) and is_scan_candidate(tmp_path / "x.NII")
    assert not is_scan_candidate(tmp_path / "notes.txt.gz")
    data = open(path, "rb").read()
    assert looks_like_nifti(data) and looks_like_nifti(gzip.decompress(data))
    cut = tmp_path / "cut.nii"
    cut.write_bytes(gzip.decompress(data)[:2000])
    with pytest.raises(ScanError, match="damaged"):
        read_scan(cut)


def mask_slices(image, mask) -> dict[int, np.ndarray]:
    volume = read_mask_volume(mask, image, read_volume(image).shape)
    return {k: axial_view(volume[:, :, k]) for k in range(volume.shape[2])}


@pytest.mark.parametrize("name", AFFINES)
def test_a_mask_volume_lines_up_with_its_image_slices_whatever_the_affine(tmp_path, name):
    image, mask = save_case(tmp_path, affine=name)
    scans, masks = read_scan(image), mask_slices(image, mask)
    assert [s.frame for s in scans] == head_frames(read_volume(image))
    for scan in scans:  # the bright cube is exactly where the mask says, slice by slice
        assert masks[scan.frame].shape == scan.pixels.shape
        assert np.array_equal(scan.pixels == 255, masks[scan.frame])
    assert {s.frame for s in scans if masks[s.frame].any()} == set(range(SHAPE[2])[CUBE[2]])


def test_a_mask_stored_in_another_axis_order_is_brought_to_the_same_axes(tmp_path):
    image = save_volume(tmp_path / "t2.nii.gz", tumor_case()[0], "lps (DICOM-like, flipped)")
    mask = save_volume(tmp_path / "t2_seg.nii.gz", tumor_case()[1],
                       "slices first (axial along the array's first axis)")
    masks = mask_slices(image, mask)
    assert all(np.array_equal(s.pixels == 255, masks[s.frame]) for s in read_scan(image))


def test_a_mask_counts_every_label_and_a_4d_mask_gives_its_first_volume(tmp_path):
    _, mask = tumor_case()
    path = tmp_path / "m.nii.gz"
    series = np.stack([mask, np.zeros_like(mask)], axis=-1)
    nibabel.save(nibabel.Nifti1Image(series, np.eye(4)), str(path))
    assert np.array_equal(read_mask_volume(path), mask > 0)
    assert read_mask_volume(path)[CUBE].all()  # labels 1, 2 and 4 alike


def test_a_mask_of_another_shape_is_refused_naming_both_files(tmp_path):
    image = save_volume(tmp_path / "a.nii.gz", tumor_case()[0])
    mask = save_volume(tmp_path / "a_seg.nii.gz", tumor_case()[1][:, :, :-1])
    with pytest.raises(ScanError, match=r"a_seg\.nii\.gz has shape \(40, 48, 29\)"
                                        r".*a\.nii\.gz has \(40, 48, 30\)"):
        read_mask_volume(mask, image, read_volume(image).shape)
    with pytest.raises(ScanError, match="mask volume .*nope.nii.gz cannot be read"):
        read_mask_volume(tmp_path / "nope.nii.gz")
