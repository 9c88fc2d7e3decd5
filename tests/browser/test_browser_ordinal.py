"""In the browser: a radiologist marks the classes as grades and retypes their order."""
import re

import pytest

from tests.browser_support import BROWSER_MARKS, PASSWORD, expect
from tests.conftest import image_bytes
from transferapp.library import images as library_images
from transferapp.library import projects as library_projects
from transferapp.models import Project

pytestmark = BROWSER_MARKS


@pytest.fixture
def expert(django_user_model):
    return django_user_model.objects.create_user("expert", password=PASSWORD)


def test_the_classes_are_marked_as_grades_and_reordered_on_the_project_page(live_server, queue, expert, watched_page,
                                                                            screenshots):
    project = library_projects.project_create(owner=expert, name="Knees")
    for grade, colour in (("KL10", "red"), ("KL2", "blue"), ("KL0", "green")):
        label = library_projects.label_create(project=project, name=grade)
        library_images.image_add(label=label, name=f"{grade}.png", data=image_bytes(colour))
    page = watched_page
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", expert.username)
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/projects/$"))
    page.goto(f"{live_server.url}{project.get_absolute_url()}")
    section = page.locator("#class-order")
    order = section.get_by_label("Order, lowest grade first")
    expect(order).to_have_value("KL0, KL2, KL10")  # numbers read as numbers, not KL0, KL10, KL2
    section.get_by_label("The classes are grades").check()
    order.fill("KL10, KL2")
    section.get_by_role("button", name="Save class order").click()
    expect(page.locator(".messages")).to_contain_text("The order leaves out KL0")
    page.locator("#class-order").get_by_label("The classes are grades").check()
    page.locator("#class-order").get_by_label("Order, lowest grade first").fill("KL10, KL2, KL0")
    page.locator("#class-order").get_by_role("button", name="Save class order").click()
    expect(page.locator("#class-order").get_by_label("Order, lowest grade first")).to_have_value("KL10, KL2, KL0")
    expect(page.locator("#class-order").get_by_label("The classes are grades")).to_be_checked()
    screenshots(page, "project-class-order")
    project = Project.objects.get(pk=project.pk)
    assert project.ordered_classes and project.class_order == ["KL10", "KL2", "KL0"]
    assert not page.problems, page.problems
