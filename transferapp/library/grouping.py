"""What ties images together (one patient's follow-up scans, one slide's fields of view), so that
a group never sits on both sides of a train/validation split.

The key of an image comes from the project's choice: a folder of the path it was imported under,
the start of its file name up to the first "_", or its DICOM patient (stored only as a keyed hash).
Near-identical images (duplicates.py) are always grouped as well.
"""
import hashlib
import hmac
from collections import defaultdict
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
    if group_by == "folder":
        folders = path.parts[:-1]
        return folders[-folder_level] if 0 < folder_level <= len(folders) else ""
    return ""


def describe(group_by: str, folder_level: int) -> str:
    if group_by == "patient":
        return "images of one DICOM patient"
    if group_by == "filename":
        return "images whose file name starts the same up to the first “_”"
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
