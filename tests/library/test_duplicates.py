"""Near-duplicates: found across resizing and recompression, kept on one side of the split."""
import io
import random

import pytest
from PIL import Image, ImageDraw

from transferapp.engine.config import TrainConfig
from transferapp.engine.data import Sample
from transferapp.library import duplicates, readiness
from transferapp.library import images as library_images
from transferapp.library import projects as library_projects
from transferapp.training.snapshot import grouped_split


def scene(seed: int, size=(160, 120)) -> Image.Image:
    """A photo-like picture: random overlapping shapes, different for every seed."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        box = [x0, y0, x0 + rng.randrange(20, 80), y0 + rng.randrange(20, 80)]
        draw.ellipse(box, fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


def jpeg(image: Image.Image, quality=90) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def test_a_resized_recompressed_copy_is_a_near_duplicate_and_another_photo_is_not():
    original = scene(1)
    copy = Image.open(io.BytesIO(jpeg(original.resize((80, 60)), quality=60)))
    assert duplicates.distance(duplicates.dhash(original), duplicates.dhash(copy)) <= duplicates.NEAR_DUPLICATE_BITS
    for seed in range(2, 12):
        assert duplicates.distance(duplicates.dhash(original), duplicates.dhash(scene(seed))) > duplicates.NEAR_DUPLICATE_BITS


def test_groups_join_transitively_and_leave_singletons_out():
    hashes = {1: "0000000000000000", 2: "0000000000000007", 3: "000000000000003f", 4: "ffffffffffffffff"}
    assert duplicates.near_duplicate_groups(hashes) == [[1, 2, 3]]


def test_the_split_never_puts_a_near_duplicate_group_on_both_sides():
    samples = [Sample(path=f"{i}.jpg", label=i % 2, key=str(i)) for i in range(40)]
    groups = [[0, 2, 4, 6], [1, 3, 5], [10, 12]]
    for seed in range(20):
        train, val = grouped_split(samples, groups, TrainConfig(val_fraction=0.3, seed=seed, small_data_below=0))
        assert len(train) + len(val) == 40 and val
        val_keys = {s.key for s in val}
        for group in groups:
            sides = {str(member) in val_keys for member in group}
            assert len(sides) == 1, (seed, group)


@pytest.mark.django_db
def test_near_duplicates_across_classes_are_flagged_before_training(alice, user):
    project = library_projects.project_create(owner=user, name="Dups")
    cats = library_projects.label_create(project=project, name="cats")
    dogs = library_projects.label_create(project=project, name="dogs")
    library_images.image_add(label=cats, name="cat.jpg", data=jpeg(scene(1)))
    library_images.image_add(label=dogs, name="cat-small.jpg", data=jpeg(scene(1).resize((100, 75)), quality=70))
    for seed in range(2, 6):
        library_images.image_add(label=cats, name=f"c{seed}.jpg", data=jpeg(scene(seed)))
    groups = readiness.near_duplicate_images(project=project)
    assert [[image.original_name for image in group] for group in groups] == [["cat.jpg", "cat-small.jpg"]]
    warnings = " ".join(readiness.training_warnings(project=project))
    assert "near-identical images sit in different classes" in warnings
    assert "only 1 image;" in warnings and "out of balance" in warnings
    page = alice.get(project.get_absolute_url()).content.decode()
    assert "1 group of near-identical images" in page and "Worth a look before training" in page


def test_an_imported_split_without_training_images_is_replaced_by_a_fresh_split():
    from transferapp.training.snapshot import _split

    samples = [Sample(path=f"{i}.jpg", label=i % 2, key=str(i)) for i in range(20)]
    everything_val = {s.key for s in samples}  # e.g. a zip of a folder called "test"
    train, val = _split(samples, everything_val, [], TrainConfig(small_data_below=0))
    assert {s.label for s in train} == {0, 1} and {s.label for s in val} == {0, 1}
    half_val = {s.key for s in samples if int(s.key) < 6}
    train, val = _split(samples, half_val, [], TrainConfig())
    assert {s.key for s in val} == half_val  # a usable given split is honoured as is, even a small one
    train, val = _split(samples, everything_val, [], TrainConfig())
    assert len(train) == 20 and val == []  # a small project's own "split": every image trains


@pytest.mark.django_db
def test_the_near_identical_groups_line_opens_a_page_of_each_groups_thumbnails(alice, user, client, other_user):
    from django.urls import reverse

    project = library_projects.project_create(owner=user, name="Groups")
    cats = library_projects.label_create(project=project, name="cats")
    dogs = library_projects.label_create(project=project, name="dogs")
    pairs = []
    for seed in (1, 2):
        first = library_images.image_add(label=cats, name=f"p{seed}.jpg", data=jpeg(scene(seed))).image
        copy = library_images.image_add(label=dogs if seed == 1 else cats, name=f"p{seed}-small.jpg",
                                        data=jpeg(scene(seed).resize((100, 75)), quality=70)).image
        pairs.append((first, copy))
    library_images.image_add(label=cats, name="alone.jpg", data=jpeg(scene(9)))
    url = reverse("project_near_duplicates", args=[project.pk])
    page = alice.get(project.get_absolute_url()).content.decode()
    assert f'<a href="{url}"><strong>2 groups of near-identical images</strong></a>' in page
    groups_page = alice.get(url).content.decode()
    items = groups_page.split('id="near-duplicate-groups"')[1].split("<li")[1:]
    assert len(items) == 2
    for item, (first, copy) in zip(items, pairs):
        assert reverse("image_thumbnail", args=[first.pk]) in item and reverse("image_thumbnail", args=[copy.pk]) in item
    assert "alone.jpg" not in groups_page
    assert "1 group sits in different classes" in groups_page
    client.force_login(other_user)
    assert client.get(url).status_code == 404
