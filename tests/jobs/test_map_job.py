"""The project map's job (#24 item 7) in a real worker process (`manage.py rqworker intake`): the page
queues it, the worker embeds the images into the shared feature cache and stores the layout, and the
page's status line stops polling."""
import time

import pytest
from django.urls import reverse

from tests.factories import inbox_with_images, project_with_images
from tests.jobs.test_failures import start_worker  # noqa: F401 (the fixture)
from transferapp.labelling import project_map
from transferapp.models import Image, ProjectMap

pytestmark = pytest.mark.django_db(transaction=True)


def test_opening_the_map_gets_it_computed_by_a_worker_process(alice, user, start_worker, settings):  # noqa: F811
    project = project_with_images(user, per_class=3)
    inbox_with_images(project, per_color=2)
    page = alice.get(reverse("project_map", args=[project.pk])).content.decode()
    assert "Computing the map…" in page
    start_worker(queues=("intake",))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not project_map.map_state(project)["fresh"]:
        time.sleep(0.5)
    row = ProjectMap.objects.get(project=project)
    assert row.status == ProjectMap.Status.READY, (row.status, row.error)
    points = project_map.load_points(row)
    assert sorted(points["ids"]) == sorted(Image.all_objects.filter(project=project).values_list("pk", flat=True))
    assert any(settings.FEATURE_CACHE_DIR.rglob("*.npy"))
    status = alice.get(reverse("project_map", args=[project.pk]) + "?part=status", HTTP_HX_REQUEST="true")
    assert "10 images, laid out in" in status.content.decode() and "every 2s" not in status.content.decode()
