"""In a real Chromium (#24): a project with 2 labelled images a class and 60 in its Inbox is labelled
with the keyboard alone on the labelling page: number keys and Enter label, the next images are
fetched ahead, a retrain in the worker changes the order and the suggestions the page shows, "more
like this" labels several at once with one key, and z undoes that."""
import re

import django_rq
from django.urls import reverse
from django.utils import timezone as django_timezone
from rq import SimpleWorker

from tests.browser.test_browser_csp import RECORD_VIOLATIONS
from tests.browser_support import BROWSER_MARKS, expect, sign_in
from tests.factories import inbox_with_images, project_with_images
from transferapp.labelling import asking
from transferapp.labelling import ranking as inbox_ranking
from transferapp.models import Image, InboxRanking

pytestmark = BROWSER_MARKS

KEYS = {"blue": "1", "red": "2"}  # classes in name order


def _truth(image: Image) -> str:
    return image.original_name.split("-")[1]  # inbox-<colour>-<n>.png


def _label_by_key(page, truth: dict, how_many: int) -> None:
    image = page.locator("#label-image")
    for _ in range(how_many):
        pk = image.get_attribute("data-pk")
        page.keyboard.press(KEYS[truth[int(pk)]])
        expect(image).not_to_have_attribute("data-pk", pk)


def test_the_inbox_is_labelled_by_keyboard_reordered_by_a_retrain_and_labelled_many_at_once(
        live_server, queue, user, settings, screenshots, watched_page):
    settings.INBOX_RETRAIN_EVERY = 5
    project = project_with_images(user, classes=("red", "blue"), per_class=2)
    truth = {image.pk: _truth(image) for image in inbox_with_images(project, colors=("red", "blue"), per_color=30, start=30)}
    inbox_ranking.ranking_refresh(project=project)  # the first order, as the worker leaves it
    first_order = list(InboxRanking.objects.get(project=project).order)
    first_cards = dict(InboxRanking.objects.get(project=project).cards)
    base, page = live_server.url, watched_page
    page.add_init_script(RECORD_VIOLATIONS)
    sign_in(page, base, "alice", "a-long-password-1")
    page.goto(f"{base}{project.get_absolute_url()}")
    page.get_by_role("link", name="Label the Inbox").click()
    page.wait_for_url(re.compile(r"/label/$"))

    image, progress, ranking = page.locator("#label-image"), page.locator("#label-progress"), page.locator("#label-ranking")
    expect(image).to_have_attribute("data-pk", str(first_order[0]))
    expect(progress).to_contain_text("0 labelled · 60 left in the Inbox")
    expect(progress).to_contain_text("needs more random picks")
    expect(page.locator("#label-reason")).to_contain_text(InboxRanking.objects.get(project=project).cards[
        str(first_order[0])]["reason"])
    for upcoming in first_order[1:4]:  # fetched ahead, so each appears at once
        url = reverse("image_file", args=[upcoming])
        page.wait_for_function(f"() => performance.getEntriesByType('resource').some((e) => e.name.endsWith('{url}'))")
    screenshots(page, "labelling")

    # Enter takes the suggestion.
    suggested = page.locator("#label-suggestion strong").inner_text()
    first = image.get_attribute("data-pk")
    page.keyboard.press("Enter")
    expect(image).not_to_have_attribute("data-pk", first)
    assert Image.objects.get(pk=first).label.name == suggested

    # Four more by number key: the fifth label queues a retrain; the worker runs it; the page takes
    # the new order and suggestions without a reload.
    _label_by_key(page, truth, 4)
    expect(progress).to_contain_text("5 labelled · 55 left")
    django_rq.get_worker("intake", worker_class=SimpleWorker).work(burst=True)
    expect(ranking).to_contain_text("trained on 9 labels", timeout=30_000)
    second = InboxRanking.objects.get(project=project)
    waiting = set(Image.inbox.filter(project=project).values_list("pk", flat=True))
    assert second.order != [pk for pk in first_order if pk in waiting]  # the order changed
    assert any(second.cards[str(pk)]["probability"] != first_cards[str(pk)]["probability"] for pk in second.order)
    expect(image).to_have_attribute("data-pk", str(asking.inbox_next(project=project, n=1)[0]["image"]))

    # Fifteen more with the keyboard alone (20 in all).
    _label_by_key(page, truth, 15)
    expect(progress).to_contain_text("20 labelled · 40 left")
    labelled = Image.objects.filter(project=project, labelled_at__isnull=False).exclude(pk=first)
    assert all(i.label.name == truth[i.pk] for i in labelled)

    # More like this: the nearest Inbox images, preselected above the similarity; one key labels them.
    shown = int(image.get_attribute("data-pk"))
    page.keyboard.press("m")
    tiles = page.locator("#similar-grid .similar-thumb")
    expect(tiles.first).to_be_visible()
    selected = [int(pk) for pk in page.locator("#similar-grid .similar-thumb.selected").evaluate_all(
        "(els) => els.map((e) => e.dataset.image)")]
    assert shown in selected and len(selected) >= 3
    screenshots(page, "more-like-this")
    page.keyboard.press(KEYS[truth[shown]])
    expect(page.locator("#label-similar")).to_be_hidden()
    expect(progress).to_contain_text(f"{20 + len(selected)} labelled · {40 - len(selected)} left")
    assert set(Image.objects.filter(pk__in=selected).values_list("label__name", flat=True)) == {truth[shown]}

    # z takes that last label (all of it) back.
    page.keyboard.press("z")
    expect(progress).to_contain_text("20 labelled · 40 left")
    assert Image.inbox.filter(pk__in=selected).count() == len(selected)
    expect(image).to_have_attribute("data-pk", str(shown))
    assert not page.problems, page.problems
    assert page.evaluate("window.__cspViolations") == []


def test_a_label_corrected_with_the_arrow_and_another_key_is_saved_and_a_lost_image_says_so(
        live_server, queue, user, watched_page):
    """Outside review: ← back and another key used to say "Labelled" while the server changed nothing."""
    project = project_with_images(user, classes=("red", "blue"), per_class=2)
    inbox_with_images(project, colors=("red", "blue"), per_color=2)
    inbox_ranking.ranking_refresh(project=project)
    base, page = live_server.url, watched_page
    sign_in(page, base, "alice", "a-long-password-1")
    page.goto(f"{base}{reverse('labelling_page', args=[project.pk])}")
    image, status = page.locator("#label-image"), page.locator("#label-status")
    expect(image).not_to_have_attribute("data-pk", "")
    first = image.get_attribute("data-pk")
    page.keyboard.press(KEYS["blue"])
    expect(image).not_to_have_attribute("data-pk", first)
    page.keyboard.press("ArrowLeft")
    expect(image).to_have_attribute("data-pk", first)
    page.keyboard.press(KEYS["red"])
    expect(status).to_have_text("Labelled red.")
    assert Image.objects.get(pk=first).label.name == "red"

    # Gone from the Inbox meanwhile (labelled by a script, say): the page says nothing was labelled.
    shown = image.get_attribute("data-pk")
    Image.all_objects.filter(pk=shown).update(deleted_at=django_timezone.now())
    page.keyboard.press(KEYS["blue"])
    expect(status).to_contain_text("Not labelled")
    expect(status).to_have_class(re.compile("error-text"))
    expect(image).to_have_attribute("data-pk", shown)
    assert not page.problems, page.problems


def test_a_project_with_one_class_adds_another_from_the_labelling_page(live_server, queue, user, watched_page):
    """A new user's dead end (outside review): the page says what to do and adds the class itself;
    digits typed in the name are a name, not a label."""
    project = project_with_images(user, classes=("red",), per_class=2)
    inbox_with_images(project, colors=("red", "blue"), per_color=1)
    base, page = live_server.url, watched_page
    sign_in(page, base, "alice", "a-long-password-1")
    page.goto(f"{base}{reverse('labelling_page', args=[project.pk])}")
    expect(page.locator("#label-add-class")).to_contain_text("one class so far")
    expect(page.locator("#label-image")).not_to_have_attribute("data-pk", "")
    page.get_by_placeholder("New class name").press_sequentially("blue 1")  # key by key: "1" is red's key
    page.get_by_role("button", name="Add a class").click()
    page.wait_for_url(re.compile(r"/label/$"))
    expect(page.locator("#label-classes")).to_contain_text("blue 1")
    expect(page.locator("#label-add-class")).to_have_count(0)
    assert Image.inbox.filter(project=project).count() == 2  # typing "1" labelled nothing
    assert not page.problems, page.problems
