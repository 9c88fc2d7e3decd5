"""In a real Chromium: the "please look at these first" gallery finds a mislabelled image and
remembers "label is right", and the predict page answers "Don't know" for a noise image given to
a model of coloured shapes."""
import io
import re

import django_rq
import numpy as np
from django.urls import reverse
from PIL import Image as PILImage
from rq import SimpleWorker

from tests.browser_support import BROWSER_MARKS, drop_files, expect
from tests.conftest import image_bytes
from tests.factories import project_with_images
from transferapp.library import images as library_images
from transferapp.models import Image, TrainingRun

pytestmark = BROWSER_MARKS


def _noise_png() -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_suspects_gallery_and_a_dont_know_answer_in_a_real_browser(
    live_server, queue, user, alice, screenshots, watched_page
):
    project = project_with_images(user, classes=("red", "blue", "green"), per_class=8)
    blue = project.labels.get(name="blue")
    wrong = library_images.image_add(label=blue, name="actually-red.png", data=image_bytes("red", shape_seed=31)).image
    alice.post(reverse("training_start", args=[project.pk]), {"base_model": "efficientnet_lite0", "preset": "fast"})
    django_rq.get_worker("default", worker_class=SimpleWorker).work(burst=True)
    run = TrainingRun.objects.get(project=project)
    assert run.status == "succeeded", run.error

    page = watched_page
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "a-long-password-1")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/projects/$"))

    page.goto(f"{live_server.url}{run.get_absolute_url()}")
    gallery = page.locator("#suspects")
    expect(gallery.get_by_role("heading")).to_contain_text("Please look at these first")
    suspect = gallery.locator(f"#suspect-{wrong.pk}")
    expect(suspect).to_contain_text("looks like red")
    screenshots(page, "suspects-gallery")
    suspect.get_by_role("button", name="Label is right").click()
    expect(suspect).to_contain_text("Kept as it is.")
    assert Image.objects.get(pk=wrong.pk).label_confirmed
    page.reload()
    expect(page.locator(f"#suspect-{wrong.pk}")).to_have_count(0)

    page.goto(f"{live_server.url}{reverse('predict', args=[project.pk])}?run={run.pk}")
    drop_files(page, "form[data-dropzone]", [("noise.png", "image/png", _noise_png())])
    card = page.locator("#predictions .prediction")
    expect(card).to_have_count(1)
    expect(card.locator(".top-class")).to_have_text("Don't know")
    expect(card.locator(".answer")).to_contain_text("unlike the training images")
    expect(card.locator(".confidence")).to_contain_text("closest class:")
    expect(card.locator(".prob-bar")).to_have_count(0)
    # Heat maps on: no map drawn for the closest class until one is picked (#32.3).
    page.get_by_label("Show where the model looked").check()
    expect(card.locator(".heatmap-ask")).to_be_visible()
    expect(card.locator(".heatmap-img")).to_be_hidden()
    assert card.locator(".heatmap-img").get_attribute("src") is None
    picker = card.locator("select[data-heatmap-class]")
    picker.select_option(picker.locator("option").nth(1).get_attribute("value"))
    expect(card.locator(".heatmap-img")).to_be_visible()
    page.wait_for_function("() => { const img = document.querySelector('#predictions .heatmap-img');"
                           " return img.complete && img.naturalWidth > 0; }")
    screenshots(page, "dont-know")
    assert not page.problems, page.problems
