"""A radiologist drops a DICOM file into a class in a real browser and sees a real thumbnail."""
import io
import re

import numpy as np
import pytest
from PIL import Image

from tests.browser_support import BROWSER_MARKS, PASSWORD, assert_assets_loaded, drop_files, expect
from tests.library.test_dicom import dicom_file
from transferapp.library import projects as library_projects

pytestmark = BROWSER_MARKS + [pytest.mark.django_db(transaction=True)]


def test_a_dropped_dicom_file_gets_a_sensible_thumbnail(live_server, queue, django_user_model, screenshots, watched_page):
    user = django_user_model.objects.create_user("radiologist", password=PASSWORD)
    project = library_projects.project_create(owner=user, name="Chest")
    label = library_projects.label_create(project=project, name="ct")
    page = watched_page
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "radiologist")
    page.fill("#id_password", PASSWORD)
    page.locator("form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/projects/$"))
    page.goto(live_server.url + label.get_absolute_url())
    assert_assets_loaded(page)
    assert ".dcm" in page.get_attribute("form[data-dropzone] input[type=file]", "accept")
    drop_files(page, "form[data-dropzone]", [("slice.dcm", "application/dicom", dicom_file("CT_small.dcm").read_bytes())])
    expect(page.locator(".upload-item.done")).to_have_count(1)
    page.wait_for_load_state("networkidle")  # the upload list fetches the new thumbnail first
    page.reload()
    thumbnail = page.locator("#image-grid img").first
    expect(thumbnail).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle())
    screenshots(page, "dicom-thumbnail")
    response = page.request.get(live_server.url + thumbnail.get_attribute("src"))
    assert response.ok
    grey = np.asarray(Image.open(io.BytesIO(response.body())).convert("L"), dtype=np.float64)
    assert grey.shape == (128, 128)
    assert 90 < grey.mean() < 140 and grey.std() > 40  # the CT slice, not black, not flat
    assert not page.problems, page.problems
