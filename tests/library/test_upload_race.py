"""The same file dropped twice at once (two of the browser's parallel uploads): one copy is kept and
the other is reported as skipped, never as a second "added" image that does not exist."""
import threading

import pytest
from django.db import connection

from tests.conftest import image_bytes
from tests.factories import project_with_images
from transferapp.library import images as library_images
from transferapp.models import Image

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_same_file_uploaded_in_parallel_is_added_once_and_skipped_otherwise(user, monkeypatch):
    project = project_with_images(user, classes=("red", "blue"), per_class=1)
    label = project.labels.get(name="red")
    raced = []

    class Spy(library_images._StoredMeanwhile):  # counts the uploads that lost the race for the row
        def __init__(self, existing):
            raced.append(existing.pk)
            super().__init__(existing)

    monkeypatch.setattr(library_images, "_StoredMeanwhile", Spy)
    for attempt in range(5):  # new bytes each time: the race needs all four to pass the duplicate check first
        data = image_bytes("green", size=(256, 256), shape_seed=100 + attempt)
        outcomes, start = [], threading.Barrier(4)

        def upload(i, attempt=attempt):
            try:
                start.wait()
                outcomes.append(library_images.image_add(label=label, name=f"copy{attempt}-{i}.png", data=data).status)
            finally:
                connection.close()

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert Image.objects.filter(label=label).count() == 2 + attempt  # the class's first image, one copy each
        assert outcomes.count("added") == 1 and outcomes.count("skipped") == 3, (attempt, outcomes)
    assert raced  # the race did happen (a lost race once answered "added" for a copy never stored)
