"""Build DICOM archives for tests as hospitals export them: studies and series shuffled across
nested folders, files named by numbers without a suffix, tags missing, and some files not DICOM.

``write_archive`` returns what a reader should find: each series' UIDs and its slices in anatomical
order, so a test compares against the plan, never against the reader's own output.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.builders.scans import make_dicom

KEY = b"tumorlens-test-installation-key!"
AXIAL = [1, 0, 0, 0, 1, 0]
AXIAL_FLIPPED = [1, 0, 0, 0, -1, 0]  # columns run to the patient's head: the raw normal points down
SAGITTAL = [0, 1, 0, 0, 0, -1]
CORONAL = [1, 0, 0, 0, 0, -1]
_C = math.cos(math.radians(45))
OBLIQUE = [1, 0, 0, 0, _C, -_C]  # 45 degrees between axial and coronal
FOLDERS = ("", "DICOM/0001", "DICOM/0002/a", "export/x/y/z")


@dataclass
class SeriesPlan:
    """One series to write and what a reader must find in it."""

    study: str  # "A" or "B"
    count: int
    geometry: Callable[[int], tuple[list | None, list | None]]  # rank -> (position, orientation)
    tags: dict
    instance: Callable[[int], int] = lambda rank: rank + 1
    uid: str = ""
    order: list[tuple[str, int | None]] = field(default_factory=list)  # (path, frame), anatomical


@dataclass
class WrittenArchive:
    root: Path
    series: dict[str, SeriesPlan]
    study_uids: dict[str, str]
    other_files: list[str]


def axial(z0: float, step: float, orientation: list = AXIAL) -> Callable[[int], tuple[list, list]]:
    """Return slice geometry at z0 + rank * step (mm), with an in-plane shift the normal ignores."""
    return lambda rank: ([3.0 * rank, -2.0 * rank, z0 + step * rank], orientation)


def along(orientation: list, origin: list, step: float) -> Callable[[int], tuple[list, list]]:
    """Return slice geometry stepping `step` mm along the normal of `orientation`."""
    row, col = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row, col)
    normal *= np.sign(normal[np.argmax(np.abs(normal))])  # towards L, P or S
    return lambda rank: (list(np.asarray(origin) + rank * step * normal), orientation)


def plans() -> dict[str, SeriesPlan]:
    """Return the archive's series: two studies, one of each awkward kind."""
    mr_head = {"BodyPartExamined": "HEAD"}
    localizer_planes = (AXIAL, CORONAL, SAGITTAL)
    return {
        "t1": SeriesPlan("A", 7, axial(-20, 5), {**mr_head, "SeriesNumber": 3, "SeriesDescription": "AX SE Doe Jane",
                                                 "RepetitionTime": 500, "EchoTime": 12},
                         instance=lambda rank: 7 - rank),  # instance numbers run backwards: position wins
        "flair": SeriesPlan("A", 6, axial(10, 6, AXIAL_FLIPPED), {
            "BodyPartExamined": "BRAIN", "SeriesNumber": 4, "SeriesDescription": "AX FLAIR Doe Jane 20240117",
            "InversionTime": 2500, "RepetitionTime": 9000, "EchoTime": 120}),
        "localizer": SeriesPlan("A", 3, lambda rank: ([0, 0, 0], localizer_planes[rank]), {
            **mr_head, "SeriesNumber": 1, "SeriesDescription": "3pl", "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}),
        "bare": SeriesPlan("A", 6, lambda rank: (None, None), {"SeriesNumber": 5, "SeriesDescription": "t2_tse_tra"}),
        "knee": SeriesPlan("B", 6, along(SAGITTAL, [-30, 0, 0], 4), {
            "BodyPartExamined": "KNEE", "SeriesNumber": 2, "SeriesDescription": "sag pd",
            "RepetitionTime": 3000, "EchoTime": 90}),
        "oblique": SeriesPlan("B", 6, along(OBLIQUE, [5, -40, 12], 4), {
            **mr_head, "SeriesNumber": 6, "SeriesDescription": "obl se", "RepetitionTime": 600, "EchoTime": 10,
            "ContrastBolusAgent": "Gadovist 7.5 ml"}),
        "ct": SeriesPlan("B", 6, axial(0, 5), {**mr_head, "Modality": "CT", "SeriesNumber": 7,
                                               "SeriesDescription": "head ct"}),
        "few": SeriesPlan("B", 2, axial(0, 5), {**mr_head, "SeriesNumber": 8, "SeriesDescription": "ax se"}),
    }


def write_archive(root: Path, seed: int = 7) -> WrittenArchive:
    """Write the planned series, shuffled across FOLDERS, plus one enhanced multi-frame series."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    series = plans()
    studies = {name: uid.generate_uid(entropy_srcs=[f"study-{name}-{seed}"]) for name in ("A", "B")}
    slices = [(name, rank) for name, plan in series.items() for rank in range(plan.count)]
    placed = {}
    for index, slot in enumerate(rng.permutation(len(slices))):  # names and folders know no order
        folder, name = FOLDERS[index % len(FOLDERS)], _file_name(index)
        placed[slices[int(slot)]] = f"{folder}/{name}".lstrip("/")
    for (name, rank), relative in placed.items():
        plan = series[name]
        plan.uid = plan.uid or uid.generate_uid(entropy_srcs=[f"series-{name}-{seed}"])
        _write_slice(root / relative, rng, studies[plan.study], plan, rank)
    for name, plan in series.items():
        plan.order = [(placed[(name, rank)], None) for rank in range(plan.count)]
    _strip_preamble(root / placed[("bare", 2)])
    series["enhanced"] = _write_enhanced(root, "export/mf/IMG0001", rng, studies["B"])
    others = _write_others(root, rng)
    return WrittenArchive(root, series, studies, others)


def _file_name(index: int) -> str:
    """Name files as exports do: numbers, UID-like dotted digits, now and then a .dcm suffix."""
    kinds = (f"IM{index:04d}", f"1.3.12.2.1107.{index * 7 + 3}", f"{index:08d}.dcm", f"{index + 160:x}")
    return kinds[(index // len(FOLDERS)) % len(kinds)]


def _write_slice(path: Path, rng: np.random.Generator, study: str, plan: SeriesPlan, rank: int) -> None:
    position, orientation = plan.geometry(rank)
    tags = {"StudyInstanceUID": study, "SeriesInstanceUID": plan.uid, "InstanceNumber": plan.instance(rank),
            "SOPInstanceUID": uid.generate_uid(entropy_srcs=[plan.uid, str(rank)]), **plan.tags}
    if position is not None:
        tags["ImagePositionPatient"], tags["ImageOrientationPatient"] = position, orientation
    sop_class = uid.CTImageStorage if tags.get("Modality") == "CT" else uid.MRImageStorage
    make_dicom(path, _pixels(rng), sop_class=sop_class, extra=tags)


def _write_enhanced(root: Path, relative: str, rng: np.random.Generator, study: str) -> SeriesPlan:
    """Write one enhanced MR file of 6 frames stored top to bottom, timing in functional groups."""
    frames = 6
    plan = SeriesPlan("B", frames, lambda rank: (None, None), {}, uid=uid.generate_uid(entropy_srcs=["enhanced"]))
    shared = _item(PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=AXIAL)]),
                   MRTimingAndRelatedParametersSequence=Sequence([_item(RepetitionTime=2300)]),
                   MRModifierSequence=Sequence([_item(InversionTimes=[900])]),
                   MREchoSequence=Sequence([_item(EffectiveEchoTime=3)]))
    per_frame = [_item(PlanePositionSequence=Sequence([_item(ImagePositionPatient=[0, 0, 50 - 3 * f])]))
                 for f in range(frames)]
    tags = {"StudyInstanceUID": study, "SeriesInstanceUID": plan.uid, "InstanceNumber": 1, "SeriesNumber": 9,
            "BodyPartExamined": "BRAIN", "SeriesDescription": "3D IR GRE", "ImageType": ["ORIGINAL", "PRIMARY"],
            "SharedFunctionalGroupsSequence": Sequence([shared]),
            "PerFrameFunctionalGroupsSequence": Sequence(per_frame)}
    pixels = np.stack([_pixels(rng) for _ in range(frames)])
    make_dicom(root / relative, pixels, sop_class=uid.EnhancedMRImageStorage, extra=tags)
    plan.order = [(relative, frame) for frame in reversed(range(frames))]  # frame 5 lies lowest
    return plan


def _write_others(root: Path, rng: np.random.Generator) -> list[str]:
    """Write files that hold no DICOM image: text without a suffix, notes, bytes that start like DICOM."""
    files = {"README": b"Export of 2 studies\n", "DICOM/0002/notes.txt": b"repeat T2 on Monday\n",
             "export/x/junk": b"\x08\x00" + rng.bytes(400),
             "DICOM/0001/damaged.dcm": bytes(128) + b"DICM" + rng.bytes(300)}
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return sorted(files)


def _strip_preamble(path: Path) -> None:
    """Rewrite a file without its 128-byte preamble and "DICM", as some old systems write them."""
    path.write_bytes(path.read_bytes()[132:])


def _item(**elements) -> Dataset:
    item = Dataset()
    for keyword, value in elements.items():
        setattr(item, keyword, value)
    return item


def _pixels(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 4000, (8, 8), dtype=np.uint16)
