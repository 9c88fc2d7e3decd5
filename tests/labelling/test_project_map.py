"""The project map's layout (#24 item 7): real features through the cache, a real queue and worker."""
import json
from pathlib import Path

import django_rq
import numpy as np
import pytest
from rq import SimpleWorker

from tests.factories import inbox_with_images, project_with_images
from transferapp.labelling import project_map
from transferapp.library import images as library_images
from transferapp.library import projects as library_projects
from transferapp.models import Image, ProjectMap

pytestmark = pytest.mark.django_db(transaction=True)


def _clusters(n_per=40, dims=64, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, size=(3, dims))
    labels = np.repeat(np.arange(3), n_per)
    return centres[labels] + rng.normal(0, 1, size=(len(labels), dims)), labels


def test_the_layout_keeps_clusters_apart_in_the_unit_square():
    features, labels = _clusters()
    xy = project_map.layout(features)
    assert xy.shape == (120, 2) and xy.min() >= 0 and xy.max() <= 1
    centres = np.array([xy[labels == c].mean(axis=0) for c in range(3)])
    spread = max(np.linalg.norm(xy[labels == c] - centres[c], axis=1).mean() for c in range(3))
    gaps = [np.linalg.norm(centres[a] - centres[b]) for a in range(3) for b in range(a + 1, 3)]
    assert min(gaps) > 2 * spread  # each cluster is a separate island


def test_tiny_and_empty_projects_still_get_a_layout():
    assert project_map.layout(np.zeros((0, 8))).shape == (0, 2)
    assert project_map.layout(np.ones((1, 8))).shape == (1, 2)
    xy = project_map.layout(np.random.default_rng(0).normal(size=(5, 8)))
    assert xy.shape == (5, 2) and np.isfinite(xy).all()


def test_the_digest_changes_with_a_label_or_a_split_but_not_by_itself(user):
    project = project_with_images(user, per_class=2)
    (waiting,) = inbox_with_images(project, colors=("red",), per_color=1)
    first = project_map.images_digest(project)
    assert project_map.images_digest(project) == first
    library_images.images_set_aside(images=list(Image.objects.filter(project=project)[:1]), for_testing=True)
    second = project_map.images_digest(project)
    assert second != first
    Image.all_objects.filter(pk=waiting.pk).update(label=project.labels.first())
    assert project_map.images_digest(project) != second


def test_the_worker_lays_out_labelled_and_inbox_images_from_the_feature_cache(user, queue, settings):
    project = project_with_images(user, per_class=4)
    inbox = inbox_with_images(project, per_color=3)
    assert project_map.map_state(project)["map"] is None
    assert project_map.map_schedule(project)
    assert project_map.map_schedule(project)  # a second ask while one waits adds no second job
    assert len(django_rq.get_queue("intake")) == 1
    assert project_map.map_state(project)["busy"]
    django_rq.get_worker("intake", worker_class=SimpleWorker).work(burst=True)

    state = project_map.map_state(project)
    row = state["map"]
    assert row.status == ProjectMap.Status.READY and state["fresh"] and row.n_points == 14 and row.seconds >= 0
    points = project_map.load_points(row)
    assert sorted(points["ids"]) == sorted(Image.all_objects.filter(project=project).values_list("pk", flat=True))
    assert {i.pk for i in inbox} <= set(points["ids"]) and len(points["xy"]) == 14
    assert any(Path(settings.FEATURE_CACHE_DIR).rglob("*.npy"))  # the shared cache, filled on the way

    library_images.images_move(images=list(Image.objects.filter(project=project)[:1]), label=project.labels.last())
    assert not project_map.map_state(project)["fresh"]  # a label changed: stale, the last map still readable
    assert len(project_map.load_points(project_map.map_state(project)["map"])["ids"]) == 14


def test_a_new_layout_replaces_the_old_points_file(user):
    project = project_with_images(user, per_class=1)
    fake = lambda paths, base: np.random.default_rng(len(paths)).normal(size=(len(paths), 16))
    first = project_map.map_compute(project, "efficientnet_lite0", embed_features=fake)
    second = project_map.map_compute(project, "efficientnet_lite0", embed_features=fake)
    assert first.points_file != second.points_file and not Path(first.points_file).exists()
    stored = json.loads(Path(second.points_file).read_text())
    assert stored["ids"] == list(Image.objects.filter(project=project).order_by("pk").values_list("pk", flat=True))
    assert len(stored["xy"]) == 2 and second.n_points == 2
    library_projects.project_delete(project=project)
    assert not Path(second.points_file).exists()  # the map lives in the project's folder


def test_a_failed_layout_is_recorded_with_a_readable_message(user, queue, monkeypatch):
    project = project_with_images(user, per_class=1)
    project_map.map_schedule(project)

    def broken(*args, **kwargs):
        raise MemoryError("too big")

    monkeypatch.setattr(project_map, "layout", broken)  # the worker runs in this process (SimpleWorker)
    django_rq.get_worker("intake", worker_class=SimpleWorker).work(burst=True)
    row = ProjectMap.objects.get(project=project)
    assert row.status == ProjectMap.Status.FAILED and row.error == "The map could not be computed: MemoryError."
