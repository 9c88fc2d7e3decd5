"""What ties images together (one patient's follow-up scans, one slide's fields of view), so that
a group never sits on both sides of a train/validation split.

The key of an image comes from the project's choice: a folder of the path it was imported under,
the start of its file name up to the first "_", or its DICOM patient (stored only as a keyed hash).
Near-identical images (duplicates.py) are always grouped as well.
"""
import hashlib
import hmac
import math
import re
from collections import Counter, defaultdict
from pathlib import PurePosixPath

from django.conf import settings


def patient_key(project_id: int, patient_id: str) -> str:
    """HMAC-SHA256 of the DICOM PatientID, keyed by SECRET_KEY and the project: equal for one
    patient's files, and the ID cannot be read back or found by hashing guesses without the key."""
    patient_id = (patient_id or "").strip()
    if not patient_id:
        return ""
    key = settings.SECRET_KEY.encode()
    return hmac.new(key, f"{project_id}\0{patient_id}".encode(), hashlib.sha256).hexdigest()


def group_key(*, group_by: str, folder_level: int, original_name: str, patient: str) -> str:
    """The image's group under the project's rule; "" when the image carries no such key."""
    if group_by == "patient":
        return patient
    path = PurePosixPath(original_name.replace("\\", "/"))
    if group_by == "filename":
        prefix, sep, _ = path.name.partition("_")
        return prefix if sep and prefix else ""
    if group_by == "filename_number":
        return filename_number(path.name)
    if group_by == "folder":
        folders = path.parts[:-1]
        return folders[-folder_level] if 0 < folder_level <= len(folders) else ""
    return ""


def describe(group_by: str, folder_level: int) -> str:
    if group_by == "patient":
        return "images of one DICOM patient"
    if group_by == "filename":
        return "images whose file name starts the same up to the first “_”"
    if group_by == "filename_number":
        return "images whose file name carries the same first number"
    if group_by == "folder":
        which = "the folder the file is in" if folder_level == 1 else f"the folder {folder_level} levels up"
        return f"images under the same {which} (as imported)"
    return ""


def merge(groups_lists) -> list[list[int]]:
    """Join overlapping groups (an image in two groups ties both together): union-find over ids."""
    parent: dict[int, int] = {}

    def root(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for groups in groups_lists:
        for group in groups:
            for member in group[1:]:
                parent[root(member)] = root(group[0])
            root(group[0])
    merged = defaultdict(list)
    for member in parent:
        merged[root(member)].append(member)
    return sorted((sorted(g) for g in merged.values() if len(g) > 1), key=lambda g: g[0])


def keyed_groups(keys: dict[int, str]) -> list[list[int]]:
    """Images sharing a non-empty key, in groups of 2+."""
    by_key = defaultdict(list)
    for pk, key in keys.items():
        if key:
            by_key[key].append(pk)
    return [sorted(g) for g in by_key.values() if len(g) > 1]


def broken_by_split(groups: list[list[int]], splits: dict[int, str]) -> list[list[int]]:
    """Groups with images on both sides of an imported train/val split (test images left aside)."""
    return [g for g in groups if len({splits.get(pk) or "train" for pk in g if splits.get(pk) != "test"}) > 1]


_NUMBER = re.compile(r"\d+")
_NOT_A_WORD = re.compile(r"[\d\W_]+")


def filename_number(name: str) -> str:
    """The first number in a file name (`person1003_bacteria_2934.jpeg` -> "1003", `9004315L.png`
    -> "9004315"): often a patient or subject number. "" when the name has none, or is nothing but
    numbers (`00130.jpg` is a counter, which folders repeat by chance)."""
    stem = PurePosixPath(name.replace("\\", "/")).name.rsplit(".", 1)[0]
    found = _NUMBER.search(stem)
    if not found or not _NOT_A_WORD.sub("", stem):
        return ""
    return found.group()


# A suggestion needs most names to carry a number and at least SUGGEST_MIN_SHARED_NUMBERS numbers
# that tie files together: a number repeated inside one class (file names in a class are unique, so
# the text around it differs: 9004315L and 9004315R), or numbers shared across classes far more
# often than numbers spread over that range would be by chance (camera counters such as IMG_1234,
# or "cat (1)", "dog (1)", collide by chance; 7-digit subject numbers do not).
SUGGEST_MIN_KEYED_SHARE = 0.5
SUGGEST_MIN_SHARED_NUMBERS = 3
SUGGEST_OVER_CHANCE = 3.0


def suggest_filename_number(files: list[tuple[str, object]]) -> dict | None:
    """`files` are (file name, class) pairs. When the names look like they carry a subject number
    that repeats: how many images grouping by it would tie together, and an example; else None."""
    keys = [(filename_number(name), label) for name, label in files]
    keyed = [key for key, _ in keys if key]
    if not files or len(keyed) < SUGGEST_MIN_KEYED_SHARE * len(files):
        return None
    counts = Counter(keyed)
    shared = {key: n for key, n in counts.items() if n > 1}
    within_a_class = {number for (number, _), n in Counter(k for k in keys if k[0]).items() if n > 1}
    if len(within_a_class) < SUGGEST_MIN_SHARED_NUMBERS and not _shared_beyond_chance(keyed, shared):
        return None
    example_key = max(shared, key=lambda key: (shared[key], key))
    example = [_base(name) for (name, _), (key, _) in zip(files, keys) if key == example_key][:3]
    return {"grouped": sum(shared.values()), "numbers": len(shared), "total": len(files), "number": example_key,
            "example": example}


def _shared_beyond_chance(keyed: list[str], shared: dict[str, int]) -> bool:
    if len(shared) < SUGGEST_MIN_SHARED_NUMBERS:
        return False
    values = [int(key) for key in keyed]
    spread = max(values) - min(values) + 1
    by_chance = 1 - math.exp(-(len(keyed) - 1) / spread)  # the share of random numbers in that range that pair up
    return sum(shared.values()) / len(keyed) > SUGGEST_OVER_CHANCE * by_chance


def _base(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).name
