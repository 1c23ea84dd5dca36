"""Sorting a DICOM archive: grouping, anatomical order, descriptions, sequence guesses, selection
with reasons, keyed UIDs, and that no identifier planted in the files comes back out."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, replace

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from pipeline.io.dicom_header import clean_description, guess_sequence
from pipeline.io.series import BRAIN_PARTS, Rules, Series, read_archive, select_series, uid_key
from tests.builders.archives import KEY, WrittenArchive, write_archive
from tests.builders.scans import PHI

SERIES = ("t1", "flair", "localizer", "bare", "knee", "oblique", "ct", "few", "enhanced")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> WrittenArchive:
    return write_archive(tmp_path_factory.mktemp("archive"))


@pytest.fixture(scope="module")
def archive(written):
    return read_archive(written.root, KEY)


@pytest.fixture(scope="module")
def found(archive, written) -> dict[str, Series]:
    """Return the series read, by the plan's name (matched through the keyed series UID)."""
    names = {uid_key(plan.uid, KEY): name for name, plan in written.series.items()}
    return {names[series.key]: series for series in archive.series}


def test_slices_group_into_their_studies_and_series(archive, written, found):
    assert set(found) == set(SERIES)
    studies = {study.key: {series.key for series in study.series} for study in archive.studies}
    for letter, study_uid in written.study_uids.items():
        names = {name for name, plan in written.series.items() if plan.study == letter}
        assert studies[uid_key(study_uid, KEY)] == {found[name].key for name in names}
    for name, plan in written.series.items():
        assert {(s.path, s.frame) for s in found[name].slices} == set(plan.order), name
        assert found[name].study_key == uid_key(written.study_uids[plan.study], KEY)


def test_series_are_ordered_by_series_number_and_studies_by_their_first_file(archive):
    numbers = [[series.info.number for series in study.series] for study in archive.studies]
    assert numbers == [sorted(group) for group in numbers]
    assert len(archive.studies) == 2


def test_files_that_hold_no_dicom_image_are_listed_not_raised(archive, written):
    assert sorted(archive.other_files) == written.other_files
    read = {piece.path for series in archive.series for piece in series.slices}
    assert not read & set(written.other_files)


def test_a_file_without_preamble_is_still_a_slice(written, found):
    stripped = [path for path, _ in written.series["bare"].order
                if (written.root / path).read_bytes()[128:132] != b"DICM"]
    assert len(stripped) == 1
    assert stripped[0] in {s.path for s in found["bare"].slices}


@pytest.mark.parametrize("name", [n for n in SERIES if n != "localizer"])
def test_slices_follow_the_anatomy_not_the_file_names(written, found, name):
    order = written.series[name].order
    assert [(s.path, s.frame) for s in found[name].slices] == order
    if name != "enhanced" and len(order) > 2:  # the test means something only if names are shuffled
        assert sorted(order, key=lambda slot: _natural(slot[0])) != order


def test_a_flipped_orientation_still_runs_inferior_to_superior(found):
    # The raw normal of the flair points to the feet; positions must still rise along z.
    assert [s.position_mm for s in found["flair"].slices] == [10.0, 16.0, 22.0, 28.0, 34.0, 40.0]


def test_position_wins_over_instance_number(found):
    assert [s.instance for s in found["t1"].slices] == [7, 6, 5, 4, 3, 2, 1]


def test_without_positions_instance_numbers_decide(found):
    slices = found["bare"].slices
    assert [s.instance for s in slices] == [1, 2, 3, 4, 5, 6]
    assert all(s.position_mm is None for s in slices)


def test_a_multi_frame_file_counts_as_its_frames_in_position_order(found):
    slices = found["enhanced"].slices
    assert [s.frame for s in slices] == [5, 4, 3, 2, 1, 0]
    assert [s.position_mm for s in slices] == [35.0, 38.0, 41.0, 44.0, 47.0, 50.0]


def test_reading_again_or_in_another_file_order_gives_the_same_archive(archive, written):
    paths = sorted((p.relative_to(written.root) for p in written.root.rglob("*") if p.is_file()), reverse=True)
    assert read_archive(written.root, KEY, paths=paths) == archive
    assert read_archive(written.root, KEY) == archive


@pytest.mark.parametrize("name, orientation, count, spacing, spacing_from, description, modality, body_part", [
    ("t1", "axial", 7, 5.0, "positions", "AX SE", "MR", "HEAD"),
    ("flair", "axial", 6, 6.0, "positions", "AX FLAIR", "MR", "BRAIN"),
    ("localizer", "mixed", 3, 5.0, "SliceThickness", "3pl", "MR", "HEAD"),
    ("bare", "unknown", 6, 5.0, "SliceThickness", "t2_tse_tra", "MR", None),
    ("knee", "sagittal", 6, 4.0, "positions", "sag pd", "MR", "KNEE"),
    ("oblique", "oblique", 6, 4.0, "positions", "obl se", "MR", "HEAD"),
    ("ct", "axial", 6, 5.0, "positions", "head ct", "CT", "HEAD"),
    ("enhanced", "axial", 6, 3.0, "positions", "3D IR GRE", "MR", "BRAIN"),
])
def test_each_series_is_described(found, name, orientation, count, spacing, spacing_from, description,
                                  modality, body_part):
    info = found[name].info
    assert (info.orientation, info.slice_count, info.spacing_mm, info.spacing_from) == (
        orientation, count, spacing, spacing_from)
    assert (info.description, info.modality, info.body_part) == (description, modality, body_part)


@pytest.mark.parametrize("name, sequence, because", [
    ("t1", "T1", "RepetitionTime 500 ms, EchoTime 12 ms → T1"),
    ("flair", "FLAIR", "InversionTime 2500 ms, RepetitionTime 9000 ms → FLAIR"),
    ("oblique", "T1 post-contrast", "RepetitionTime 600 ms, EchoTime 10 ms, ContrastBolusAgent set → T1 post-contrast"),
    ("bare", "T2", "SeriesDescription mentions T2 → T2"),
    ("knee", "T2", "RepetitionTime 3000 ms, EchoTime 90 ms → T2"),
    ("enhanced", "T1", "InversionTime 900 ms, EchoTime 3 ms → T1"),  # read from functional groups
    ("few", "unknown", "no usable timing tag, no known word in SeriesDescription or ProtocolName → unknown"),
])
def test_the_sequence_guess_names_the_tags_that_decided_it(found, name, sequence, because):
    assert (found[name].info.sequence.name, found[name].info.sequence.because) == (sequence, because)


@pytest.mark.parametrize("tags, name, because", [
    ({"SeriesDescription": "ep2d_diff_b1000", "RepetitionTime": 5000, "EchoTime": 90}, "other",
     "SeriesDescription mentions DIFF"),  # TR/TE alone would say T2
    ({"ImageType": ["DERIVED", "PRIMARY", "ADC"], "RepetitionTime": 5000, "EchoTime": 90}, "other", "ImageType ADC"),
    ({"ScanningSequence": ["EP"], "RepetitionTime": 1500, "EchoTime": 30}, "other", "ScanningSequence EP"),
    ({"SeriesDescription": "ax flair", "RepetitionTime": 9000, "EchoTime": 120}, "FLAIR",
     "SeriesDescription mentions FLAIR"),  # no InversionTime: the name decides before TR/TE
    ({"SeriesDescription": "T1 FLAIR sag", "InversionTime": 800}, "T1", "SeriesDescription mentions T1"),
    ({"SeriesDescription": "AX T1+C"}, "T1 post-contrast", "SeriesDescription mentions T1, SeriesDescription mentions +C"),
    ({"ProtocolName": "t1_mprage_post"}, "T1 post-contrast", "ProtocolName mentions T1, ProtocolName mentions POST"),
    ({"SeriesDescription": "T1 pre contrast"}, "T1", "SeriesDescription mentions T1 → T1"),
    ({"SeriesDescription": "T1", "ContrastBolusAgent": "NONE"}, "T1", "SeriesDescription mentions T1 → T1"),
    ({"RepetitionTime": 2500, "EchoTime": 20}, "other", "fit no T1, T2 or FLAIR pattern"),  # proton density
    ({"InversionTime": 0, "RepetitionTime": 0, "EchoTime": 0}, "unknown", "no usable timing tag"),
])
def test_guess_sequence_on_single_headers(tags, name, because):
    guess = guess_sequence(_header(**tags))
    assert guess.name == name
    assert because in guess.because
    assert guess.because.endswith(f"→ {name}")


def test_an_unparseable_timing_tag_counts_as_missing():
    header = _header(EchoTime=12, SeriesDescription="ax T2")
    tag = Tag("RepetitionTime")
    header[tag] = RawDataElement(tag, "DS", 4, b"abc ", 0, False, True)  # as read from a bad file
    assert guess_sequence(header).because == "SeriesDescription mentions T2 → T2"


@pytest.mark.parametrize("name, analyse, reason", [
    ("t1", True, None), ("flair", True, None), ("oblique", True, None), ("enhanced", True, None),
    ("bare", True, None),  # no BodyPartExamined, no geometry, no timing: missing tags never skip
    ("localizer", False, "skipped: a localizer (ImageType LOCALIZER)"),
    ("knee", False, "skipped: not a brain series (BodyPartExamined KNEE)"),
    ("ct", False, "skipped: not MR (Modality CT)"),
    ("few", False, "skipped: too few slices (2 < 5)"),
])
def test_selection_says_why_a_series_is_skipped(found, name, analyse, reason):
    selection = select_series(found[name])
    assert (selection.series_key, selection.analyse, selection.reason) == (found[name].key, analyse, reason)


def test_a_localizer_is_known_by_its_description_too(found):
    series = found["t1"]
    named = replace(series, info=replace(series.info, description="3-plane LOC", image_type=()))
    assert select_series(named).reason == "skipped: a localizer (SeriesDescription mentions 3-PLANE LOC)"


def test_the_image_check_backs_up_the_tags_and_runs_only_when_they_pass(found):
    asked = []

    def no_head_in_t1(series: Series) -> str | None:
        asked.append(series.key)
        return "no head in the images" if series.key == found["t1"].key else None

    selections = {name: select_series(series, image_check=no_head_in_t1) for name, series in found.items()}
    assert selections["t1"].reason == "skipped: no head in the images"
    assert selections["flair"].analyse
    assert set(asked) == {found[n].key for n in ("t1", "flair", "oblique", "enhanced", "bare")}


def test_all_series_analyses_everything_without_checking(found):
    def never(series: Series) -> str | None:
        raise AssertionError("the image check must not run when every series is asked for")

    assert all(select_series(s, all_series=True, image_check=never).analyse for s in found.values())


def test_rules_are_data(found):
    assert select_series(found["few"], Rules(min_slices=2)).analyse
    assert select_series(found["knee"], Rules(body_parts=BRAIN_PARTS | {"KNEE"})).analyse
    assert select_series(found["ct"], Rules(modalities=frozenset({"MR", "CT"}))).analyse


def test_uid_key_is_a_keyed_hash():
    uid, other = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
    assert re.fullmatch(r"[0-9a-f]{64}", uid_key(uid, KEY))
    assert uid_key(uid, KEY) == uid_key(uid + "\0", KEY)  # the padding of an odd-length UI value
    assert uid_key(uid, KEY) != uid_key(other, KEY)
    assert uid_key(uid, KEY) != uid_key(uid, KEY[::-1])


@pytest.mark.parametrize("key", [b"", b"short", "a text key of enough length"])
def test_a_weak_or_missing_key_is_refused_before_reading(tmp_path, key):
    with pytest.raises(ValueError, match="at least 16 bytes"):
        uid_key("1.2.3", key)
    with pytest.raises(ValueError, match="secret"):
        read_archive(tmp_path / "not there", key)


@pytest.mark.filterwarnings("ignore:The value length")  # an over-long description, as bad exports write
def test_clean_description_cuts_the_patients_identifiers():
    header = _header(PatientName="Doe^Jane", PatientID="PID-4711", AccessionNumber="ACC998",
                     SeriesDescription="T1_Doe_Jane PID-4711 ACC998 1961-02-03 0123456 ax")
    assert clean_description(header) == "T1_ax"
    assert clean_description(_header(PatientName="Doe^Jane", SeriesDescription="JANE DOE")) is None
    assert len(clean_description(_header(SeriesDescription="t1 " * 30))) <= 64


def test_no_identifier_planted_in_the_files_comes_back(archive, found, written):
    planted = {value.lower() for value in PHI.values()} | {"doe", "jane", "quincy", "gadovist"}
    planted |= _uids_in(written)
    selections = [select_series(series) for series in archive.series]
    text = " ".join([repr(archive), json.dumps(asdict(archive)), repr(selections)]).lower()
    assert "ax flair" in text and found["t1"].key in text  # the text holds what was read
    leaked = sorted(value for value in planted if value in text)
    assert leaked == []


def _uids_in(written: WrittenArchive) -> set[str]:
    """Return every UID written anywhere in the archive's DICOM files, meta information included."""
    uids = set()

    def collect(dataset: Dataset, element) -> None:
        if element.VR == "UI" and element.value:
            uids.add(str(element.value).lower())

    for plan in written.series.values():
        for path in {path for path, _ in plan.order}:
            dataset = pydicom.dcmread(written.root / path, force=True)
            dataset.walk(collect)
            dataset.file_meta.walk(collect)
    assert len(uids) > 40  # every slice's SOP instance UID at least
    return uids


def _header(**elements) -> Dataset:
    header = Dataset()
    for keyword, value in elements.items():
        setattr(header, keyword, value)
    return header


def _natural(text: str) -> tuple:
    return tuple(int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", text)))
