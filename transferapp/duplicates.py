"""Near-duplicate images (resized, recompressed, lightly edited copies) by difference hash.

Near-duplicates must never sit on both sides of the train/validation split, or validation
accuracy measures memory, not generalisation. A 64-bit dHash changes by a few bits under
resizing and JPEG recompression and by many bits between different photos.
"""
from collections import defaultdict

from PIL import Image

HASH_BITS = 64
# Hashes this close are the same picture (measured: recompression and resizing move 0-4 bits,
# unrelated photos are 20+ bits apart).
NEAR_DUPLICATE_BITS = 6
# Pigeonhole: with 8 bands of 8 bits, two hashes that differ in at most 7 bits share a band,
# so only pairs sharing a band need comparing (not all n² pairs).
BANDS = 8


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


def near_duplicate_groups(hashes: dict[int, str], max_bits: int = NEAR_DUPLICATE_BITS) -> list[list[int]]:
    """Groups (of 2+ ids) of images whose hashes are within max_bits, joined transitively."""
    parent = {key: key for key in hashes}

    def root(key):
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for a, b in _candidate_pairs(hashes):
        if distance(hashes[a], hashes[b]) <= max_bits:
            parent[root(a)] = root(b)
    groups = defaultdict(list)
    for key in hashes:
        groups[root(key)].append(key)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: g[0])


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
