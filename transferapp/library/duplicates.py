"""Near-duplicate images (resized, recompressed, lightly edited copies) by difference hash.

Near-duplicates must never sit on both sides of the train/validation split, or validation
accuracy measures memory, not generalisation. A 64-bit dHash changes by a few bits under
resizing and JPEG recompression and by many bits between different photos.
"""
from collections import defaultdict
from typing import Callable

import numpy as np
from PIL import Image

HASH_BITS = 64
# Hashes this close are the same picture (measured: recompression and resizing move 0-4 bits,
# unrelated photos are 20+ bits apart).
NEAR_DUPLICATE_BITS = 6
# Pigeonhole: with 8 bands of 8 bits, two hashes that differ in at most 7 bits share a band,
# so only pairs sharing a band need comparing (not all n² pairs).
BANDS = 8
SIGNATURE_SIDE = 16
# Mean absolute difference of the 16x16 grey thumbnails, in grey levels (0-255), below which two
# images with close hashes are confirmed as the same picture. Recompressed or resized copies
# differ by about 1-3 levels; see README for the measurement on the shared data sets.
MAX_SIGNATURE_DIFF = 6.0


def dhash(image: Image.Image) -> str:
    """Difference hash: is each pixel brighter than its right neighbour, on a 9x8 grey thumbnail."""
    small = image.convert("L").resize((9, 8), Image.Resampling.LANCZOS)
    pixels = small.tobytes()
    bits = 0
    for row in range(8):
        for col in range(8):
            left, right = pixels[row * 9 + col], pixels[row * 9 + col + 1]
            bits = (bits << 1) | (left > right)
    return f"{bits:016x}"


def distance(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def grey_signature(image: Image.Image) -> np.ndarray:
    """The second signal: a 16x16 grey thumbnail. dHash compares neighbouring pixels only, so flat
    or mostly black images (MRI slices, microscopy backgrounds) hash alike whatever they show."""
    return np.asarray(image.convert("L").resize((SIGNATURE_SIDE, SIGNATURE_SIDE), Image.Resampling.BOX), dtype=np.int16)


def signature_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def near_duplicate_groups(hashes: dict[int, str], max_bits: int = NEAR_DUPLICATE_BITS,
                          signature: Callable[[int], np.ndarray | None] | None = None) -> list[list[int]]:
    """Groups (of 2+ ids) in which every pair is within max_bits (complete linkage: no chains of
    friends of friends) and, when `signature` gives both images' grey thumbnails, also within
    MAX_SIGNATURE_DIFF grey levels on average."""
    neighbours = defaultdict(set)
    for a, b in near_duplicate_pairs(hashes, max_bits, signature):
        neighbours[a].add(b)
        neighbours[b].add(a)
    groups: list[list[int]] = []
    # Best-connected first, so that a tight cluster forms before its outliers can claim members.
    for key in sorted(neighbours, key=lambda k: (-len(neighbours[k]), k)):
        home = next((g for g in groups if all(member in neighbours[key] for member in g)), None)
        if home is not None:
            home.append(key)
        else:
            groups.append([key])
    return sorted((sorted(g) for g in groups if len(g) > 1), key=lambda g: g[0])


def near_duplicate_pairs(hashes: dict[int, str], max_bits: int = NEAR_DUPLICATE_BITS,
                         signature: Callable[[int], np.ndarray | None] | None = None) -> list[tuple[int, int]]:
    """Every pair of near-identical images, each confirmed on its own (hash, then grey thumbnail).

    The groups above are for people to look at; a split must keep every such pair on one side
    (an image close to only part of a group is in no group there, but is still a copy)."""
    return [(a, b) for a, b in _candidate_pairs(hashes)
            if distance(hashes[a], hashes[b]) <= max_bits and _confirmed(a, b, signature)]


def _confirmed(a, b, signature) -> bool:
    if signature is None:
        return True
    sig_a, sig_b = signature(a), signature(b)
    if sig_a is None or sig_b is None:  # no thumbnail to compare: the hash alone decides
        return True
    return signature_distance(sig_a, sig_b) <= MAX_SIGNATURE_DIFF


def _candidate_pairs(hashes: dict[int, str]):
    seen = set()
    for band in range(BANDS):
        buckets = defaultdict(list)
        for key, value in hashes.items():
            buckets[value[band * 2 : band * 2 + 2]].append(key)
        for members in buckets.values():
            for i, a in enumerate(members):
                for b in members[i + 1 :]:
                    if (a, b) not in seen:
                        seen.add((a, b))
                        yield a, b
