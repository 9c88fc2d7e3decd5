"""Issue 32, item 4: file names that carry a patient or subject number get grouping by it
suggested, when no grouping is set; names that only count do not."""
import pytest
from django.urls import reverse

from tests.conftest import image_bytes
from tests.factories import upload
from transferapp.library import grouping, readiness
from transferapp.library import projects as library_projects
from transferapp.models import Project

pytestmark = pytest.mark.django_db

COLOURS = ["red", "blue", "green", (200, 120, 40), (90, 30, 160), (20, 200, 200)]


def _project_with_files(client, user, names_by_class: dict[str, list[str]]) -> Project:
    project = library_projects.project_create(owner=user, name="Names")
    seed = 0
    for class_name, names in names_by_class.items():
        label = library_projects.label_create(project=project, name=class_name)
        files = []
        for name in names:
            seed += 1
            files.append(upload(name, image_bytes(COLOURS[seed % len(COLOURS)], shape_seed=seed)))
        response = client.post(reverse("label_upload", args=[project.pk, label.pk]), {"files": files})
        assert response.status_code in (200, 302)
    assert project.images.count() == sum(len(names) for names in names_by_class.values())
    return project


def test_knee_style_subject_numbers_get_grouping_suggested_and_one_click_sets_it(alice, user):
    subjects = [9004315, 9011053, 9025994, 9036287]
    project = _project_with_files(alice, user, {
        "KL0": [f"{s}L.png" for s in subjects[:3]] + [f"{s}R.png" for s in subjects[:3]] + ["9047539L.png"],
        "KL2": [f"{subjects[3]}L.png", f"{subjects[3]}R.png", "9052335R.png"],
    })
    page = alice.get(project.get_absolute_url()).content.decode()
    assert 'id="group-suggestion"' in page
    assert "8 of your 10 images share their number with another (4 numbers)" in page
    response = alice.post(reverse("project_image_options", args=[project.pk]),
                          {"group_by": "filename_number", "group_folder_level": "1"})
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.group_by == "filename_number"
    groups = readiness.split_groups(project=project)
    names = sorted(sorted(project.images.get(pk=pk).original_name for pk in group) for group in groups)
    assert names == [[f"{s}L.png", f"{s}R.png"] for s in subjects]
    assert 'id="group-suggestion"' not in alice.get(project.get_absolute_url()).content.decode()


def test_chest_xray_style_person_numbers_get_grouping_suggested(alice, user):
    project = _project_with_files(alice, user, {
        "PNEUMONIA": ["person1003_bacteria_2934.jpeg", "person1003_bacteria_2935.jpeg", "person1004_virus_1686.jpeg",
                      "person1004_virus_1687.jpeg", "person101_bacteria_483.jpeg", "person101_bacteria_484.jpeg"],
        "NORMAL": ["IM-0115-0001.jpeg", "IM-0117-0001.jpeg", "NORMAL2-IM-0381-0001.jpeg"],
    })
    page = alice.get(project.get_absolute_url()).content.decode()
    assert 'id="group-suggestion"' in page and "person1003_bacteria_2934.jpeg" in page


def test_names_that_only_count_or_repeat_per_folder_suggest_nothing(alice, user):
    counters = [f"{i:05d}.jpg" for i in range(1, 6)]  # brick_crack style: the same numbers in every class folder
    project = _project_with_files(alice, user, {"Positive": counters, "Negative": counters})
    assert 'id="group-suggestion"' not in alice.get(project.get_absolute_url()).content.decode()
    downloads = {name: [f"{name} ({i}).jpg" for i in range(1, 5)] for name in ("cat", "dog", "fox")}
    assert grouping.suggest_filename_number([(n, c) for c, names in downloads.items() for n in names]) is None


def test_the_first_number_of_a_file_name():
    assert grouping.filename_number("train/KL0/9004315L.png") == "9004315"
    assert grouping.filename_number("person1003_bacteria_2934.jpeg") == "1003"
    assert grouping.filename_number("00130.jpg") == "" and grouping.filename_number("daisy.jpg") == ""
