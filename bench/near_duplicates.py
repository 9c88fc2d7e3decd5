"""How many near-identical groups the old (friends-of-friends on dHash) and the new (complete
linkage, confirmed by a 16x16 grey thumbnail) grouping finds on real data sets, read in place.

    .venv/bin/python bench/near_duplicates.py ../../shared/datasets/flowers ../../shared/datasets/knee_kl

A group is counted "mixed" when two of its members differ by more than MAX_SIGNATURE_DIFF grey
levels on the 16x16 thumbnail (visibly different pictures); "cross-class" when it spans classes.
"""
import json
import sys
from collections import defaultdict
from itertools import combinations
from pathlib import Path

from transferapp.engine.data import is_image_file
from transferapp.engine.imaging import load_rgb
from transferapp.library import duplicates
from transferapp.library.intake import THUMB_SIZE


def _old_groups(hashes):
    """The previous algorithm: union-find over every pair within NEAR_DUPLICATE_BITS."""
    parent = {k: k for k in hashes}

    def root(k):
        while parent[k] != k:
            k = parent[k]
        return k

    for a, b in duplicates._candidate_pairs(hashes):
        if duplicates.distance(hashes[a], hashes[b]) <= duplicates.NEAR_DUPLICATE_BITS:
            parent[root(a)] = root(b)
    groups = defaultdict(list)
    for k in hashes:
        groups[root(k)].append(k)
    return [g for g in groups.values() if len(g) > 1]


def _summary(groups, signatures, classes):
    mixed = sum(1 for g in groups if any(duplicates.signature_distance(signatures[a], signatures[b])
                                         > duplicates.MAX_SIGNATURE_DIFF for a, b in combinations(g, 2)))
    return {"groups": len(groups), "images_in_groups": sum(map(len, groups)),
            "largest": max(map(len, groups), default=0), "mixed": mixed,
            "cross_class": sum(1 for g in groups if len({classes[k] for k in g}) > 1)}


def measure(root: Path) -> dict:
    paths = sorted(p for p in root.rglob("*") if is_image_file(p))
    hashes, signatures, classes = {}, {}, {}
    for i, path in enumerate(paths):
        thumb = load_rgb(path)
        thumb.thumbnail((THUMB_SIZE, THUMB_SIZE))  # the app hashes the full image, compares thumbnails
        hashes[i] = duplicates.dhash(load_rgb(path))
        signatures[i] = duplicates.grey_signature(thumb)
        classes[i] = path.parent.name
    new = duplicates.near_duplicate_groups(hashes, signature=signatures.get)
    hash_only_complete = duplicates.near_duplicate_groups(hashes)
    return {"data": root.name, "images": len(paths), "old_friends_of_friends": _summary(_old_groups(hashes), signatures, classes),
            "complete_linkage_hash_only": _summary(hash_only_complete, signatures, classes),
            "new_complete_linkage_plus_thumbnail": _summary(new, signatures, classes),
            "example_new_groups": [[str(paths[k].relative_to(root)) for k in g] for g in new[:3]]}


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        print(json.dumps(measure(Path(folder))))
