"""Ordered classes (grades): their natural order, and the run's classes put in grade order, so that
a class's index is its rank and every table (confusion matrix, per-class figures) reads lowest first."""
from __future__ import annotations

import dataclasses
import re


def natural_order(names) -> list[str]:
    """Names sorted with their numbers read as numbers: KL2 < KL10, "stage 9" < "stage 12"."""
    return sorted(names, key=lambda name: [int(part) if part.isdigit() else part.lower()
                                           for part in re.split(r"(\d+)", name)])


def in_grade_order(classes: list[str], class_order: list[str], *sample_lists) -> tuple[list[str], list[list]]:
    """The classes re-listed in `class_order` and every sample's label renumbered to match.
    Names of the order with no class in this run are left out; a class missing from it is an error."""
    missing = [c for c in classes if c not in class_order]
    if missing:
        raise ValueError(f"The class order does not place {', '.join(missing)}: list every class, lowest grade first.")
    ordered = [c for c in class_order if c in classes]
    new_index = {old: ordered.index(name) for old, name in enumerate(classes)}
    relabelled = [[dataclasses.replace(s, label=new_index[s.label]) for s in samples] for samples in sample_lists]
    return ordered, relabelled
