"""Near-identical groups hold only images that are each close to each other (complete linkage,
confirmed by a second signal), so uniform scans (brain MRIs on black) do not chain into one group."""
import io

import numpy as np
import pytest
from PIL import Image

from transferapp.library import duplicates, readiness
from transferapp.library import images as library_images
from transferapp.library import projects as library_projects


def test_a_chain_of_small_steps_is_not_one_group():
    # 1~2 and 2~3 are 5 bits apart, but 1 and 3 are 10 bits apart: no single group of three.
    hashes = {1: "0000000000000000", 2: "000000000000001f", 3: "00000000000003ff"}
    groups = duplicates.near_duplicate_groups(hashes)
    assert [1, 2, 3] not in groups and all(len(g) == 2 for g in groups)


def test_equal_hashes_of_visibly_different_pictures_are_not_grouped():
    # Flat images of different brightness all hash to 0: the grey-thumbnail check tells them apart.
    dark, light = Image.new("L", (64, 64), 20), Image.new("L", (64, 64), 200)
    assert duplicates.dhash(dark) == duplicates.dhash(light)
    signatures = {1: duplicates.grey_signature(dark), 2: duplicates.grey_signature(light),
                  3: duplicates.grey_signature(Image.new("L", (64, 64), 22))}
    hashes = {1: duplicates.dhash(dark), 2: duplicates.dhash(light), 3: duplicates.dhash(dark)}
    assert duplicates.near_duplicate_groups(hashes, signature=signatures.get) == [[1, 3]]


def _scan(seed: int) -> bytes:
    """A brain-MRI-like slice: a mid-grey ellipse with faint texture on black; differs per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:128, 0:128]
    size = 30 + 3 * seed
    head = ((x - 64) ** 2 / (size + 10) ** 2 + (y - 64) ** 2 / size ** 2) < 1
    pixels = np.where(head, 60 + 10 * seed + rng.normal(0, 4, head.shape), 0)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.django_db
def test_different_uniform_scans_are_not_grouped_and_groups_show_file_names(alice, user):
    project = library_projects.project_create(owner=user, name="MRI")
    label = library_projects.label_create(project=project, name="brain")
    for seed in range(8):
        assert library_images.image_add(label=label, name=f"scan{seed}.png", data=_scan(seed)).image
    copy = Image.open(io.BytesIO(_scan(3))).resize((100, 100))
    out = io.BytesIO()
    copy.save(out, format="JPEG", quality=80)
    assert library_images.image_add(label=label, name="scan3-copy.jpg", data=out.getvalue()).image
    groups = readiness.near_duplicate_images(project=project)
    assert [sorted(image.original_name for image in group) for group in groups] == [["scan3-copy.jpg", "scan3.png"]]
    page = alice.get(project.get_absolute_url()).content.decode()
    assert "scan3-copy.jpg" in page


def test_a_split_keeps_every_near_identical_pair_together_even_outside_the_shown_groups():
    # 2 is close to 1, 3 and 4, which are far from each other: the page shows one group of two, but
    # every image close to 2 must sit on 2's side of a split.
    hashes = {1: "0000000000000000", 2: "000000000000001f", 3: "00000000000003ff", 4: "00000000000f801f"}
    shown = duplicates.near_duplicate_groups(hashes)
    assert len(shown) == 1 and len(shown[0]) == 2
    from transferapp.library import grouping

    assert grouping.merge([duplicates.near_duplicate_pairs(hashes)]) == [[1, 2, 3, 4]]
