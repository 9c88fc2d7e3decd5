"""Ordered classes through the app: the setting on the project page, its order reaching the engine,
and the grade figures on the results page of an ordered project only (a real worker trains)."""
import django_rq
import pytest
from django.urls import reverse
from rq import SimpleWorker

from tests.conftest import image_bytes
from transferapp.library import images as library_images
from transferapp.library import projects as library_projects
from transferapp.models import Project, TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)

# Grade names whose alphabetical order (KL0, KL10, KL2) is not their natural order (KL0, KL2, KL10).
GRADES = {"KL10": "red", "KL2": "blue", "KL0": "green"}


def _graded_project(owner, name="Knees"):
    project = library_projects.project_create(owner=owner, name=name)
    for grade, colour in GRADES.items():
        label = library_projects.label_create(project=project, name=grade)
        for i in range(6):
            library_images.image_add(label=label, name=f"{grade}-{i}.png", data=image_bytes(colour, shape_seed=i))
    return project


def _train_fast(client, project) -> TrainingRun:
    response = client.post(reverse("training_start", args=[project.pk]),
                           {"base_model": "efficientnet_lite0", "preset": "fast"})
    assert response.status_code == 302, response.content
    django_rq.get_worker("default", worker_class=SimpleWorker).work(burst=True)
    run = TrainingRun.objects.filter(project=project).latest("pk")
    assert run.status == "succeeded", run.error
    return run


def test_the_results_page_adds_grade_figures_for_an_ordered_project_only(alice, user, queue):
    ordered, plain = _graded_project(user), _graded_project(user, name="Knees, unordered")
    page = alice.get(ordered.get_absolute_url()).content.decode()
    assert 'value="KL0, KL2, KL10"' in page  # the natural order is offered
    alice.post(reverse("project_class_order", args=[ordered.pk]), {"ordered_classes": "on", "class_order": "KL0, KL2, KL10"})

    run = _train_fast(alice, ordered)
    assert run.config["class_order"] == ["KL0", "KL2", "KL10"] and run.metrics["classes"] == ["KL0", "KL2", "KL10"]
    page = alice.get(run.get_absolute_url()).content.decode()
    assert 'id="grade-error"' in page and "within one grade" in page and "KL0 &lt; KL2 &lt; KL10" in page
    n = run.metrics["within_one_grade"]["n"]
    assert n == run.metrics["n_scored"] and f"of {n} images; 95% interval" in page
    assert 'id="phases"' in page and "Reading images" in page  # each step's estimate against its time
    matrix = page[page.index('id="confusion-matrix"'):]
    assert matrix.index(">KL0<") < matrix.index(">KL2<") < matrix.index(">KL10<")  # grade order kept

    plain_run = _train_fast(alice, plain)
    assert plain_run.config["class_order"] == [] and "within_one_grade" not in plain_run.metrics
    assert 'id="grade-error"' not in alice.get(plain_run.get_absolute_url()).content.decode()


def test_a_typed_order_is_kept_and_a_wrong_one_is_refused_with_a_message(alice, user, queue):
    project = _graded_project(user)
    alice.post(reverse("project_class_order", args=[project.pk]), {"ordered_classes": "on", "class_order": "KL10, KL2, KL0"})
    project.refresh_from_db()
    assert project.ordered_classes and project.class_order == ["KL10", "KL2", "KL0"]
    response = alice.post(reverse("project_class_order", args=[project.pk]),
                          {"ordered_classes": "on", "class_order": "KL0, KL2"}, follow=True)
    assert "The order leaves out KL10" in response.content.decode()
    response = alice.post(reverse("project_class_order", args=[project.pk]),
                          {"ordered_classes": "on", "class_order": "KL0, KL2, KL3"}, follow=True)
    assert "No class is called KL3" in response.content.decode()
    project.refresh_from_db()
    assert project.class_order == ["KL10", "KL2", "KL0"]


def test_another_user_cannot_change_the_setting(client, user, other_user, queue):
    project = _graded_project(user)
    client.force_login(other_user)
    response = client.post(reverse("project_class_order", args=[project.pk]),
                           {"ordered_classes": "on", "class_order": "KL10, KL2, KL0"})
    assert response.status_code == 404
    project = Project.objects.get(pk=project.pk)
    assert not project.ordered_classes and project.class_order == []


def test_a_class_whose_name_holds_a_comma_can_be_put_in_order(alice, user, queue):
    project = library_projects.project_create(owner=user, name="Severity")
    for name in ("grade 1, mild", "grade 2", "grade 3, severe"):
        library_projects.label_create(project=project, name=name)
    page = alice.get(project.get_absolute_url()).content.decode()
    shown = "grade 1, mild, grade 2, grade 3, severe"  # the page's own rendering of the natural order
    assert shown in page
    response = alice.post(reverse("project_class_order", args=[project.pk]),
                          {"ordered_classes": "on", "class_order": "grade 3, severe, grade 2,grade 1, mild"}, follow=True)
    assert "No class is called" not in response.content.decode()
    project.refresh_from_db()
    assert project.class_order == ["grade 3, severe", "grade 2", "grade 1, mild"]
