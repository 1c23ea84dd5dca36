"""Read what a DICOM header says without tripping over it, and guess an MR series' sequence from it.

Exports drop tags, leave them empty, or fill them with values pydicom cannot parse; enhanced
(multi-frame) files keep timing and geometry inside functional groups. ``header_value`` and its
kin treat all of these as "missing" and look in the functional groups too, so a series is never
rejected or misread for a tag that is absent.

``slice_normal`` and ``orientation_name`` read a slice's plane from ImageOrientationPatient.

``guess_sequence`` names a series' contrast from its acquisition tags and names, and says which
tags decided it, so a radiologist can see why. Its words are quoted from a fixed vocabulary and its
numbers from timing tags: a description's free text never comes out of it whole.

``clean_description`` keeps SeriesDescription, free text that radiologists know a series by and
that an operator can type anything into (it is rarely a name, but it happens). Out go the patient's
name parts and IDs found in the same header, dates and runs of 6+ digits (record numbers); the rest
is cut to 64 characters, the LO limit. A name no tag in the header carries cannot be recognised, so
the output is "non-identifying" in the sense of the standard's own fields, not a guarantee.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

# Timing in ms. FLAIR nulls CSF with a long inversion (TI ~2000-2800, TR 6000-11000); an inversion
# of 300-1500 with a short echo is an IR-prepared T1 (MPRAGE, T1-FLAIR); otherwise spin-echo rules:
# short TR and TE weight T1, long TR and TE weight T2.
FLAIR_TI, FLAIR_TR, T1_IR_TI = 1500, 4000, 300
T1_TR, T1_TE, T2_TR, T2_TE = 1000, 30, 2000, 60
# Brain axials are tilted along the AC-PC line by 10-20 degrees and still read as axial.
OBLIQUE_DEGREES = 30
_AXES = ("sagittal", "coronal", "axial")  # the patient axis (x, y, z of LPS) the normal is nearest
DESCRIPTION_CHARS = 64  # the LO limit
NAME_FIELDS = ("SeriesDescription", "ProtocolName")  # what the technologist named the series
_OTHER_TYPES = {"DIFFUSION", "ADC", "TRACE", "FA", "PERFUSION", "ASL", "SWI", "MIP", "ANGIO"}
_NO_AGENT = {"NONE", "NO", "N/A", "NA", "-"}
# Enhanced MR keeps these under other names (PS3.3 C.8.13.5: MR Echo and MR Modifier macros).
_ENHANCED = {"EchoTime": "EffectiveEchoTime", "InversionTime": "InversionTimes"}
_IDENTIFIERS = ("PatientName", "PatientID", "OtherPatientIDs", "AccessionNumber", "PatientBirthDate")
_GROUPS = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
_DATES_AND_NUMBERS = re.compile(r"(19|20)\d\d[-./][01]\d[-./][0-3]\d|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}|\d{6,}")
_SEPARATOR_RUNS = re.compile(r"([\s_^,;:/-])[\s_^,;:/-]+")
_CODE = re.compile(r"[A-Z0-9_ ]{1,16}")  # the shape of a DICOM code string (CS)


def _words(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Z0-9])({pattern})(?![A-Z0-9])")


# Diffusion, perfusion, susceptibility and angiography come first: their long TR and TE look T2.
_OTHER_WORDS = (("other", _words(r"DWI|DIFF\w*|ADC|TRACE|DTI|SWI|T2\*|T2STAR|PERF\w*|BOLD|TOF|MRA|ANGIO\w*")),)
_NAMED_WORDS = (("FLAIR", _words(r"(?<!T1 )(?<!T1)FLAIR|TIRM|DARK ?FLUID")),
                ("T1", _words(r"T1\w*|MPRAGE|SPGR|FSPGR|BRAVO|TFE|VIBE")), ("T2", _words(r"T2\w*")))
_CONTRAST = re.compile(r"\+ ?(C|GD|GAD)(?![A-Z0-9])|(?<![A-Z0-9])(POST(GAD|GD|CONTRAST|KM|C)?|GAD\w*"
                       r"|GD|CE|C\+|CONTRAST|KM)(?![A-Z0-9])")
_NO_CONTRAST = _words(r"(PRE|NON|NO|WITHOUT|NATIV\w*) ?(CONTRAST|GAD\w*|GD|KM|C)")


@dataclass(frozen=True)
class SequenceGuess:
    """What an MR series probably is, and the tags that decided it, in words."""

    name: str  # "T1", "T1 post-contrast", "T2", "FLAIR", "other" or "unknown"
    because: str  # e.g. "InversionTime 2500 ms, RepetitionTime 9000 ms → FLAIR"


def guess_sequence(header: Dataset) -> SequenceGuess:
    """Guess an MR series' contrast from one of its headers.

    Evidence is taken in order: diffusion, perfusion and the like (ImageType, echo planar, names);
    a long inversion time (FLAIR); the words the series was named with; TR/TE. A T1 is
    post-contrast when ContrastBolusAgent is set or its name says so ("+C", "GAD", "POST").

    Args:
        header: a series' header; pixels are not needed.

    Returns:
        The guess, "unknown" when no tag speaks, with the deciding tags in ``because``.
    """
    found = (_other_by_tags(header) or _by_words(header, _OTHER_WORDS) or _flair_by_timing(header)
             or _by_words(header, _NAMED_WORDS) or _by_timing(header))
    if found is None:
        return SequenceGuess("unknown", f"no usable timing tag, no known word in {' or '.join(NAME_FIELDS)}"
                                        " → unknown")
    name, because = found
    contrast = _contrast(header) if name == "T1" else None
    if contrast:
        name, because = "T1 post-contrast", f"{because}, {contrast}"
    return SequenceGuess(name, f"{because} → {name}")


def header_value(item: Dataset, keyword: str):
    """Return a tag's value from item or its enhanced functional groups; None when missing or empty."""
    sources = [item] + [sequence[0] for group in _GROUPS for sequence in _group_sequences(item, group)]
    for source in sources:
        for name in filter(None, (keyword, _ENHANCED.get(keyword))):
            value = own_value(source, name)
            if value is not None:
                return value
    return None


def own_value(item: Dataset, keyword: str):
    """Return a tag's value in item itself; None when absent, empty or unparseable."""
    try:
        value = item.get(keyword)
    except Exception:  # a value pydicom cannot parse counts as missing
        return None
    return None if value is None or (hasattr(value, "__len__") and len(value) == 0) else value


def header_values(header: Dataset, keyword: str) -> list:
    """Return a tag's values as a list: [] when missing, one item for a single value."""
    value = header_value(header, keyword)
    return [] if value is None else list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]


def header_number(header: Dataset, keyword: str) -> float | None:
    """Return a tag's (first) value as a finite float, else None."""
    values = header_values(header, keyword)
    try:
        number = float(values[0]) if values else math.nan
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def header_text(header: Dataset, keyword: str) -> str:
    """Return a single text value, or "" (a value split at backslashes is not one)."""
    value = header_value(header, keyword)
    return value if isinstance(value, str) else ""


def as_code(value) -> str | None:
    """Return a value as an upper-case code string when it has that shape, else None."""
    text = str(value).strip().upper()
    return text if _CODE.fullmatch(text) else None


def header_code(header: Dataset, keyword: str) -> str | None:
    """Return a single-valued tag as a code string (Modality's MR), else None."""
    value = header_value(header, keyword)
    return None if value is None else as_code(value)


def header_codes(header: Dataset, keyword: str) -> tuple[str, ...]:
    """Return a tag's values that are code strings (ImageType's ORIGINAL, PRIMARY, …)."""
    return tuple(code for code in map(as_code, header_values(header, keyword)) if code)


def clean_description(header: Dataset) -> str | None:
    """Return SeriesDescription without the patient's name parts and IDs, dates or long numbers."""
    text = "".join(c if c.isprintable() else " " for c in header_text(header, "SeriesDescription"))
    for part in _identifier_parts(header):
        text = re.sub(rf"(?<![^\W_]){re.escape(part)}(?![^\W_])", "", text, flags=re.IGNORECASE)
    text = _SEPARATOR_RUNS.sub(r"\1", _DATES_AND_NUMBERS.sub("", text)).strip(" _^,;:/-")
    return text[:DESCRIPTION_CHARS].strip() or None


def as_vector(value, size: int) -> tuple[float, ...] | None:
    """Return size finite floats from a multi-valued tag, else None."""
    try:
        vector = tuple(float(x) for x in value)
    except (TypeError, ValueError):
        return None
    return vector if len(vector) == size and all(map(math.isfinite, vector)) else None


def slice_normal(orientation: tuple[float, ...]) -> tuple[float, float, float] | None:
    """Return the unit slice normal of an ImageOrientationPatient, pointing to L, P or S.

    Flipped rows or columns give the same normal, so slices order alike; None when degenerate.
    """
    (a, b, c), (d, e, f) = orientation[:3], orientation[3:]
    n = (b * f - c * e, c * d - a * f, a * e - b * d)
    length = math.sqrt(sum(x * x for x in n))
    if length < 1e-6:
        return None
    sign = 1 if max(n, key=abs) > 0 else -1
    return tuple(sign * x / length for x in n)


def orientation_name(orientation: tuple[float, ...]) -> str:
    """Return "axial", "coronal", "sagittal" (within OBLIQUE_DEGREES), "oblique" or "unknown"."""
    normal = slice_normal(orientation)
    if normal is None:
        return "unknown"
    axis = max(range(3), key=lambda i: abs(normal[i]))
    return _AXES[axis] if abs(normal[axis]) >= math.cos(math.radians(OBLIQUE_DEGREES)) else "oblique"


def _group_sequences(item: Dataset, group: str) -> list:
    """Return the non-empty sequences in the first item of a functional-groups sequence."""
    first = own_value(item, group)
    try:
        return [element.value for element in first[0] if element.VR == "SQ" and element.value] if first else []
    except Exception:
        return []


def _identifier_parts(header: Dataset) -> list[str]:
    """Return the patient's identifiers whole and in parts of 2+ characters, longest first."""
    parts = set()
    for keyword in _IDENTIFIERS:
        for value in map(str, header_values(header, keyword)):
            parts.update(p for p in [value.strip(), *re.split(r"[\W_]+", value)] if len(p) >= 2)
    return sorted(parts, key=len, reverse=True)


def _other_by_tags(header: Dataset) -> tuple[str, str] | None:
    kind = next((code for code in header_codes(header, "ImageType") if code in _OTHER_TYPES), None)
    if kind:
        return "other", f"ImageType {kind}"
    if "EP" in header_codes(header, "ScanningSequence"):
        return "other", "ScanningSequence EP (echo planar: diffusion or perfusion)"
    return None


def _by_words(header: Dataset, patterns) -> tuple[str, str] | None:
    """Return the first category whose words a name holds, SeriesDescription before ProtocolName."""
    for keyword in NAME_FIELDS:
        text = _name(header, keyword)
        for name, pattern in patterns:
            found = pattern.search(text)
            if found:
                return name, f"{keyword} mentions {found.group(0)[:12]}"
    return None


def _flair_by_timing(header: Dataset) -> tuple[str, str] | None:
    ti, tr = _ms(header, "InversionTime"), _ms(header, "RepetitionTime")
    if ti and ti >= FLAIR_TI and (tr is None or tr >= FLAIR_TR):
        return "FLAIR", f"InversionTime {ti:g} ms" + (f", RepetitionTime {tr:g} ms" if tr else "")
    return None


def _by_timing(header: Dataset) -> tuple[str, str] | None:
    tr, te, ti = (_ms(header, keyword) for keyword in ("RepetitionTime", "EchoTime", "InversionTime"))
    if ti and T1_IR_TI <= ti < FLAIR_TI and te and te < T1_TE:
        return "T1", f"InversionTime {ti:g} ms, EchoTime {te:g} ms"
    if not (tr and te):
        return None
    timing = f"RepetitionTime {tr:g} ms, EchoTime {te:g} ms"
    if tr < T1_TR and te < T1_TE:
        return "T1", timing
    if tr >= T2_TR and te >= T2_TE:
        return "T2", timing
    return "other", f"{timing} fit no T1, T2 or FLAIR pattern"


def _contrast(header: Dataset) -> str | None:
    agent = header_text(header, "ContrastBolusAgent").strip()
    if agent and agent.upper() not in _NO_AGENT:
        return "ContrastBolusAgent set"  # free text (a product, a dose): named, never quoted
    for keyword in NAME_FIELDS:
        text = _name(header, keyword)
        found = None if _NO_CONTRAST.search(text) else _CONTRAST.search(text)
        if found:
            return f"{keyword} mentions {found.group(0).strip()}"
    return None


def _ms(header: Dataset, keyword: str) -> float | None:
    value = header_number(header, keyword)
    return value if value and value > 0 else None  # 0 is how scanners write "not applicable"


def _name(header: Dataset, keyword: str) -> str:
    """Return a name upper-cased, with _ - / as spaces, so "t1_mprage_post" reads as words."""
    return re.sub(r"[_\-/]", " ", header_text(header, keyword).upper())
