"""Issue 32, item 4: beside the headline, what a figure from one source can and cannot promise,
and the check that would show a shift to another site, machine or time."""
import pytest
from django.urls import reverse

from tests.factories import project_with_images
from tests.reporting.test_trust_web import _finished_run as trust_run

pytestmark = pytest.mark.django_db


# A validation figure of 9/10 on a 40 + 10 image project (the trust page's run helper, other numbers).
VALIDATION = {"accuracy": 0.9, "n_scored": 10, "accuracy_ci": [0.6, 0.98], "confusion": [[5, 0], [1, 4]],
              "n_train": 40, "n_val": 10}


def _finished_run(project, **metrics):
    return trust_run(project, **{**VALIDATION, **metrics})


def _scope(page: str) -> str:
    assert 'id="figure-scope"' in page
    return page.split('id="figure-scope"')[1].split("</div>")[0]


def test_the_results_page_says_what_a_validation_figure_cannot_promise_and_how_to_check(alice, user):
    project = project_with_images(user)
    run = _finished_run(project)
    scope = _scope(alice.get(run.get_absolute_url()).content.decode())
    assert "same source, site, machine and time" in scope and "a random share of your own images" in scope
    assert "says nothing about images from elsewhere" in scope
    assert f'href="{project.get_absolute_url()}#import"' in scope and "<code>test/</code>" in scope
    assert "set them aside for testing" in scope
    assert f'href="{reverse("predict", args=[project.pk])}"' in scope and "unlike the training images" in scope


def test_a_test_figure_is_scoped_to_its_test_images(alice, user):
    project = project_with_images(user)
    run = _finished_run(project, evaluated_on="test", n_test=10,
                        validation={"accuracy": 0.95, "n_scored": 10, "out_of_fold": False})
    scope = _scope(alice.get(run.get_absolute_url()).content.decode())
    assert "images like these test images" in scope and "a random share" not in scope
    assert "says nothing about images from elsewhere" in scope
