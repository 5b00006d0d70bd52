"""Lesion class codes, their names, and the explicit mapping from ISIC challenge codes."""

from __future__ import annotations

import re
from collections.abc import Iterable

HAM10000_CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

CLASS_NAMES: dict[str, str] = {
    "akiec": "Actinic keratosis / intraepithelial carcinoma",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis-like lesion",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic nevus",
    "vasc": "Vascular lesion",
}

# Image counts of the HAM10000 training set (Tschandl et al. 2018); the demo generator follows them.
HAM10000_COUNTS: dict[str, int] = {
    "akiec": 327,
    "bcc": 514,
    "bkl": 1099,
    "df": 115,
    "mel": 1113,
    "nv": 6705,
    "vasc": 142,
}

# ISIC 2018 Task 3 and ISIC 2019 ground-truth columns -> DermaSynth codes. HAM10000's "akiec" holds
# actinic keratoses and intraepithelial carcinoma (SCC in situ); ISIC 2019 splits that group into AK
# and SCC, so both fold back into akiec. UNK ("none of the others") has no class here: such rows are
# reported as unknown labels and left out.
ISIC_CLASS_MAP: dict[str, str | None] = {
    "MEL": "mel",
    "NV": "nv",
    "BCC": "bcc",
    "AKIEC": "akiec",
    "AK": "akiec",
    "SCC": "akiec",
    "BKL": "bkl",
    "DF": "df",
    "VASC": "vasc",
    "UNK": None,
}

_LABEL_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


def normalize_label(raw: str) -> str:
    """Lower-case and validate a class label.

    Raises:
        ValueError: if the label is empty or holds characters other than a-z, 0-9, ``_`` and ``-``.
    """
    label = raw.strip().lower()
    if not _LABEL_PATTERN.match(label):
        raise ValueError(f"class label {raw!r} is not accepted: use 1-64 of a-z, 0-9, '_' and '-'")
    return label


def class_names_of(labels: Iterable[str]) -> list[str]:
    """The sorted distinct labels: the class index order used by every model (HAM10000's is alphabetical)."""
    return sorted(set(labels))
