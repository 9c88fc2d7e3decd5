"""Per-project image options: "images must not be mirrored" and what ties images together
(a folder, a file-name prefix, the DICOM patient), which every split respects."""
import io

import numpy as np
import pytest
from PIL import Image as PILImage
from django.urls import reverse

from tests.conftest import image_bytes
from tests.factories import project_with_images, upload
from tests.library.test_dicom import dicom_with_identity
from transferapp.engine.config import TrainConfig
from transferapp.engine.data import Sample
from transferapp.library import images as library_images
from transferapp.library import projects as library_projects
from transferapp.models import Image, Project, TrainingRun
from transferapp.training import snapshot

pytestmark = pytest.mark.django_db


def _train(client, project):
    response = client.post(reverse("training_start", args=[project.pk]),
                           {"base_model": "efficientnet_lite0", "preset": "best"})
    assert response.status_code == 302
    return TrainingRun.objects.filter(project=project).latest("pk")


def test_the_no_mirroring_switch_on_the_project_page_reaches_the_training_config(alice, user, queue):
    project = project_with_images(user)
    assert _train(alice, project).config["no_mirroring"] is False
    response = alice.post(reverse("project_image_options", args=[project.pk]), {"no_mirroring": "on", "group_by": ""})
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.no_mirroring is True
    assert _train(alice, project).config["no_mirroring"] is True


def test_a_project_of_dicom_images_is_not_mirrored_unless_the_user_says_so(alice, user, queue):
    project = library_projects.project_create(owner=user, name="Scans")
    for name in ("mr", "ct"):
        label = library_projects.label_create(project=project, name=name)
        for i in range(5):
            outcome = library_images.image_add(label=label, name=f"{name}{i}.dcm", data=dicom_with_identity(patient_id=f"{name}{i}"))
            assert outcome.image, outcome.error
    assert _train(alice, project).config["no_mirroring"] is True
    page = alice.get(project.get_absolute_url()).content.decode()
    assert 'name="no_mirroring" checked' in page
    alice.post(reverse("project_image_options", args=[project.pk]), {"group_by": ""})  # the box unticked
    assert _train(alice, project).config["no_mirroring"] is False


def _grey_png() -> bytes:
    out = io.BytesIO()
    PILImage.new("L", (64, 64), 90).save(out, format="PNG")
    return out.getvalue()


def _rgb_stored_xray(seed: int) -> bytes:
    """A grey picture saved as an RGB JPEG, the usual export of an X-ray viewer."""
    rng = np.random.default_rng(seed)
    grey = (rng.random((96, 96)) * 255).astype(np.uint8)
    out = io.BytesIO()
    PILImage.fromarray(grey).convert("RGB").save(out, format="JPEG", quality=85)
    return out.getvalue()


def _upload(client, project, label, files):
    return client.post(reverse("label_upload", args=[project.pk, label.pk]),
                       {"files": [upload(name, data, "image/jpeg") for name, data in files]})


def test_grayscale_images_get_the_no_mirroring_option_suggested(alice, user):
    project = library_projects.project_create(owner=user, name="Grey")
    label = library_projects.label_create(project=project, name="a")
    _upload(alice, project, label, [("x.png", image_bytes("red"))])  # a colour image: no suggestion
    assert "look like grayscale" not in alice.get(project.get_absolute_url()).content.decode()
    _upload(alice, project, label, [("g.png", _grey_png()), ("h.jpg", _rgb_stored_xray(1))])
    assert "look like grayscale" in alice.get(project.get_absolute_url()).content.decode()


def test_rgb_stored_grey_scans_count_as_grey_and_colour_photos_do_not(alice, user):
    project = library_projects.project_create(owner=user, name="Chest")
    label = library_projects.label_create(project=project, name="NORMAL")
    response = _upload(alice, project, label, [(f"person{i}_xray.jpeg", _rgb_stored_xray(i)) for i in range(3)])
    assert response.status_code in (200, 302)
    assert Image.objects.filter(project=project).count() == 3
    assert all(Image.objects.filter(project=project).values_list("grayscale", flat=True))
    assert "look like grayscale" in alice.get(project.get_absolute_url()).content.decode()


def test_a_few_black_and_white_photos_among_colour_ones_suggest_nothing(alice, user):
    project = library_projects.project_create(owner=user, name="Photos")
    label = library_projects.label_create(project=project, name="roses")
    colours = ["red", "blue", "green", (200, 120, 40)]
    _upload(alice, project, label, [(f"c{i}.jpg", image_bytes(c, fmt="JPEG", shape_seed=i)) for i, c in enumerate(colours)])
    _upload(alice, project, label, [("bw.jpg", _rgb_stored_xray(7))])
    grey = dict(Image.objects.filter(project=project).values_list("original_name", "grayscale"))
    assert grey == {"c0.jpg": False, "c1.jpg": False, "c2.jpg": False, "c3.jpg": False, "bw.jpg": True}
    assert "look like grayscale" not in alice.get(project.get_absolute_url()).content.decode()


def test_the_dicom_patient_id_is_stored_only_as_a_keyed_hash(user):
    project = library_projects.project_create(owner=user, name="Scans")
    label = library_projects.label_create(project=project, name="mr")
    image = library_images.image_add(label=label, name="a.dcm", data=dicom_with_identity(patient_id="PID-0042-SECRET")).image
    assert image.patient_key and "PID-0042" not in image.patient_key and len(image.patient_key) == 64


def _images(user, names_by_label: dict) -> Project:
    project = library_projects.project_create(owner=user, name="Knees")
    seed = 0
    for label_name, names in names_by_label.items():
        label = library_projects.label_create(project=project, name=label_name)
        for name in names:
            seed += 1
            outcome = library_images.image_add(label=label, name=name, data=image_bytes(label_name, shape_seed=seed))
            assert outcome.image, outcome.error
    return project


def _groups_on_both_sides(project, train, val) -> list[str]:
    side = {s.key: "train" for s in train} | {s.key: "val" for s in val}
    sides = {}
    for image in project.images.all():
        sides.setdefault(image.original_name.split("_")[0], set()).add(side[str(image.pk)])
    return [prefix for prefix, s in sides.items() if len(s) > 1]


def test_every_split_keeps_a_filename_group_on_one_side(user):
    names = {"red": [f"p{p}_{v}.png" for p in range(6) for v in range(3)],
             "blue": [f"q{p}_{v}.png" for p in range(6) for v in range(3)]}
    project = _images(user, names)
    samples = [Sample(im.file.path, 0 if im.label.name == "red" else 1, str(im.pk)) for im in project.images.all()]
    for seed in range(5):
        train, val = snapshot.grouped_split(samples, [], TrainConfig(val_fraction=0.3, seed=seed, small_data_below=0))
        if _groups_on_both_sides(project, train, val):
            break
    else:
        pytest.fail("without groups, some seed should split a patient (the test's premise)")
    project.group_by = "filename"
    project.save()
    from transferapp.library import readiness
    groups = readiness.split_groups(project=project)
    for seed in range(5):
        train, val = snapshot.grouped_split(samples, groups, TrainConfig(val_fraction=0.3, seed=seed, small_data_below=0))
        assert val and not _groups_on_both_sides(project, train, val)


def test_a_folder_level_of_the_import_path_groups_images(user):
    project = _images(user, {"red": ["red/pat1/a.png", "red/pat1/b.png", "red/pat2/c.png"],
                             "blue": ["blue/pat1/d.png", "blue/pat3/e.png"]})
    project.group_by, project.group_folder_level = "folder", 1
    project.save()
    from transferapp.library import readiness
    groups = readiness.split_groups(project=project)
    names = sorted(sorted(Image.objects.get(pk=pk).original_name for pk in group) for group in groups)
    assert names == [["blue/pat1/d.png", "red/pat1/a.png", "red/pat1/b.png"]]


def test_an_imported_split_that_breaks_a_group_is_named_in_a_warning(alice, user):
    project = _images(user, {"red": ["p1_a.png", "p1_b.png", "p2_a.png"], "blue": ["q1_a.png", "q2_a.png"]})
    Image.objects.filter(project=project, original_name="p1_b.png").update(split="val")
    Image.objects.filter(project=project, original_name="q2_a.png").update(split="val")
    project.group_by = "filename"
    project.save()
    page = alice.get(project.get_absolute_url()).content.decode()
    assert "imported split puts" in page and "p1_a.png" in page and "p1_b.png" in page


def test_the_results_page_says_how_the_split_was_made(user):
    project = _images(user, {"red": [f"p{i}_a.png" for i in range(5)], "blue": [f"q{i}_a.png" for i in range(5)]})
    project.group_by = "filename"
    project.save()
    samples = [Sample(im.file.path, 0 if im.label.name == "red" else 1, str(im.pk)) for im in project.images.all()]
    from transferapp.library import readiness
    groups = readiness.split_groups(project=project)
    _, _, how = snapshot.split_for_run(project, samples, set(), TrainConfig(small_data_below=0), groups)
    assert "file name" in how and "one side" in how
    train, val, how = snapshot.split_for_run(project, samples, set(), TrainConfig(), groups)  # 5 a class: small
    assert len(train) == 10 and val == [] and "every image trained the model" in how
