"""Issue 32 item 15: a form sent from a stale page gets the app's own page, not Django's bare one."""
import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import project_with_images

pytestmark = pytest.mark.django_db


def test_a_post_with_a_stale_csrf_token_gets_a_styled_page_that_offers_the_way_back(user):
    project = project_with_images(user, per_class=5)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    page_url = "http://testserver" + project.get_absolute_url()
    response = browser.post(reverse("project_intended_use", args=[project.pk]), {"intended_use": "x", "csrfmiddlewaretoken": "stale"},
                            HTTP_REFERER=page_url)
    html = response.content.decode()
    assert response.status_code == 403
    assert 'href="/static/transferapp/app.css' in html or "app.css" in html  # the app's own page and style
    assert "Nothing was saved" in html and "expired" in html
    assert f'href="{page_url}"' in html  # back to the page it came from
    project.refresh_from_db()
    assert project.intended_use == ""


def test_the_way_back_never_leads_off_site(user):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    response = browser.post(reverse("project_list"), {"name": "x"}, HTTP_REFERER="https://evil.example/phish")
    html = response.content.decode()
    assert response.status_code == 403 and "evil.example" not in html and reverse("project_list") in html
