"""In a real Chromium, #26's "Done means" end to end through the UI: the owner shares a project on its
Sharing page (two labellers, an editor, a viewer); the editor starts a reading study of the test set;
two readers read every image blind with the number keys (no class name outside the class buttons, no
file name, no model answer on the page); the agreement page shows Cohen's kappa (equal to
scikit-learn's on the same reads) and Fleiss' kappa with their 95% intervals; the editor closes the
study, adjudicates every disagreement by key and writes the labels back (the images move, the audit
log names her); a viewer sees no Train/Upload/Delete and a labeller's POST answers 403.

The ORM only creates the accounts and the project's images, and checks the outcome at the end."""
import re

import pytest
from django.contrib.auth import get_user_model
from sklearn.metrics import cohen_kappa_score

from tests.browser.test_browser_csp import RECORD_VIOLATIONS
from tests.browser_support import BROWSER_MARKS, TIMEOUT_MS, expect, sign_in
from tests.conftest import image_bytes
from transferapp.library import images as library_images
from transferapp.library import projects as library_projects
from transferapp.models import AuditEntry, Image, ReadingStudy

pytestmark = BROWSER_MARKS

OWNER_PASSWORD = "a-long-password-1"  # tests/conftest.py's `user` (alice)
COLOURS = {"crimson": (200, 20, 60), "teal": (0, 128, 128), "ochre": (204, 119, 34)}
TEST_PER_CLASS = 3  # set aside for testing: the study reads these 9
# The reads by position in the study (images in id order: crimson ×3, teal ×3, ochre ×3). ann reads
# them as they are labelled; bob differs on positions 1, 5 and 7.
ANN = ["crimson"] * 3 + ["teal"] * 3 + ["ochre"] * 3
BOB = ["crimson", "teal", "crimson", "teal", "teal", "ochre", "ochre", "crimson", "ochre"]
# eve's final label for each disagreement: bob's on 1 and 7 (those images move), ann's on 5 (stays).
ADJUDICATED = {1: "teal", 5: "teal", 7: "crimson"}
KAPPA = re.compile(r"(-?\d\.\d\d)\s+(-?\d\.\d\d) to (-?\d\.\d\d)")


def _password(name):
    return f"{name}-long-password-1"


def _project(owner):
    """Three classes, each with 3 test-set images and 2 others (which the study must leave out)."""
    project = library_projects.project_create(owner=owner, name="Slides")
    labels = {name: library_projects.label_create(project=project, name=name) for name in COLOURS}
    for split, seeds in (("test", range(TEST_PER_CLASS)), ("", range(10, 12))):
        for name, rgb in COLOURS.items():
            for seed in seeds:
                outcome = library_images.image_add(label=labels[name], name=f"{name}-{seed}.png", split=split,
                                                   data=image_bytes(rgb, (64, 64), shape_seed=seed))
                assert outcome.image is not None, outcome.error
    return project


def _new_page(browser, base, username, password):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(f"JS error: {exc}"))
    page.on("response", lambda r: r.status >= 500 and page.problems.append(f"HTTP {r.status} {r.url}"))
    page.add_init_script(RECORD_VIOLATIONS)
    sign_in(page, base, username, password)
    return page


def _share(page, who, role):
    page.locator("#share-form input[name=who]").fill(who)
    page.locator("#share-form select[name=role]").select_option(role)
    page.locator("#share-button").click()
    expect(page.locator(".messages")).to_contain_text(f"Shared with {who} as {role}.")
    expect(page.locator(f'#member-list tr[data-member="{who}"]')).to_be_visible()


def _keys(page, root) -> dict[str, str]:
    """{class name: its number key}, as the page numbers them."""
    buttons = page.locator(f"{root} button[data-key]")
    return {buttons.nth(i).get_attribute("value"): buttons.nth(i).get_attribute("data-key") for i in range(buttons.count())}


def _without_class_buttons(page) -> str:
    """The page's body as HTML (text and attributes), the class buttons taken out."""
    return page.evaluate("""() => { const body = document.body.cloneNode(true);
        body.querySelectorAll('#study-classes').forEach((e) => e.remove()); return body.innerHTML.toLowerCase(); }""")


def _assert_blind(page, project):
    shown = _without_class_buttons(page)
    for name in COLOURS:
        assert name not in shown, f"the reading page shows the class name {name!r} outside its buttons"
    for file_name in project.images.values_list("original_name", flat=True):
        assert file_name.lower() not in shown, f"the reading page shows the file name {file_name!r}"
    assert "not read yet" in shown  # no read of anyone's (nor the model's answer) is shown
    answer = page.request.get(page.locator("#read-image").evaluate("img => img.src"))
    assert answer.status == 200
    said = " ".join(f"{k}: {v}" for k, v in answer.headers.items()).lower()
    assert not any(name in said for name in COLOURS), said  # a file name, if any, is the content hash


def _read_all(page, base, project, reads):
    """Open the study from the project page and read every image with its number key."""
    page.goto(f"{base}/projects/{project.pk}/")
    page.locator("#reading-studies").get_by_role("link", name="Read").click()
    progress = page.locator("#read-progress")
    total = len(reads)
    for n in range(total):
        expect(progress).to_contain_text(f"{n} of {total} read · image {n + 1} of {total}")
        expect(page.locator("#study-reading")).to_have_attribute("data-keyed-ready", "1")
        expect(page.locator("#read-image")).to_have_js_property("complete", True)
        _assert_blind(page, project)
        page.keyboard.press(_keys(page, "#study-classes")[reads[n]])
    expect(page.locator("#read-done")).to_contain_text(f"You have read all {total} images.")


def _kappa_row(page, first_cell) -> tuple[float, float, float]:
    """(kappa, low, high) from the agreement table's row whose first cell is `first_cell`."""
    row = page.locator("table.metrics tbody tr").filter(has=page.locator("td", has_text=first_cell)).first
    found = KAPPA.search(row.locator("td").nth(1).inner_text())
    assert found, f"no kappa with an interval in the row {first_cell!r}: {row.inner_text()!r}"
    return tuple(float(x) for x in found.groups())


def _adjudicate_all(page):
    keys = _keys(page, "#adjudication-classes")
    progress = page.locator("#adjudication-progress")
    for done in range(len(ADJUDICATED)):
        expect(progress).to_contain_text(f"{done} of {len(ADJUDICATED)} disagreements adjudicated")
        expect(page.locator("#study-adjudication")).to_have_attribute("data-keyed-ready", "1")
        alt = page.locator("#study-adjudication figure img").get_attribute("alt")
        position = int(re.search(r"Image (\d+) of this study", alt).group(1)) - 1
        assert {r for r in page.locator("#reads tbody td:nth-child(2)").all_inner_texts()} == {ANN[position], BOB[position]}
        page.keyboard.press(keys[ADJUDICATED[position]])
    expect(progress).to_contain_text(f"{len(ADJUDICATED)} of {len(ADJUDICATED)} disagreements adjudicated")
    expect(page.locator("#study-adjudication")).to_contain_text("Every disagreement is adjudicated.")


def test_owner_shares_readers_read_blind_agreement_shows_kappas_and_an_editor_adjudicates(live_server, user, browser):
    users = get_user_model()
    for name in ("ann", "bob", "eve", "vic"):
        users.objects.create_user(name, password=_password(name))
    project = _project(user)
    truth = {image.pk: image.label.name for image in project.images.select_related("label")}
    base = live_server.url

    # 1. The owner shares the project on its Sharing page.
    owner = _new_page(browser, base, user.username, OWNER_PASSWORD)
    owner.goto(f"{base}/projects/{project.pk}/")
    owner.locator("#sharing-link").click()
    for who, role in (("ann", "labeller"), ("bob", "labeller"), ("eve", "editor"), ("vic", "viewer")):
        _share(owner, who, role)
    ann = _new_page(browser, base, "ann", _password("ann"))
    shared = ann.locator(".shared-note")
    expect(shared).to_have_attribute("data-role", "labeller")
    expect(shared).to_contain_text("Shared by alice · you are labeller")

    # 2. eve, the editor, starts a study of the test set with ann and bob as readers.
    eve = _new_page(browser, base, "eve", _password("eve"))
    eve.goto(f"{base}/projects/{project.pk}/")
    eve.locator("#reading-studies").get_by_role("link", name="Start a study").click()
    eve.get_by_label("Name").fill("Second reading")
    eve.locator("#study-new").get_by_label("ann", exact=True).check()
    eve.locator("#study-new").get_by_label("bob", exact=True).check()
    expect(eve.locator("input[name=source][value=test]")).to_be_checked()
    eve.locator("#start-study").click()
    n = len(ANN)
    expect(eve.locator(".messages")).to_contain_text(f"Started “Second reading” with {n} images.")
    study = ReadingStudy.objects.get(project=project)
    items = list(study.items.order_by("position"))
    assert [truth[item.image_id] for item in items] == ANN  # the test set only, in the order ANN assumes

    # 3. ann, then bob, read every image blind with the number keys.
    _read_all(ann, base, project, ANN)
    bob = _new_page(browser, base, "bob", _password("bob"))
    _read_all(bob, base, project, BOB)

    # 4. eve: the interim agreement, then closes the study and reads the final figures.
    eve.goto(f"{base}/projects/{project.pk}/")
    eve.locator("#reading-studies").get_by_role("link", name="Agreement (interim)").click()
    expect(eve.locator("h1")).to_contain_text("interim")
    eve.goto(f"{base}/projects/{project.pk}/")
    eve.locator("#reading-studies").get_by_role("link", name="Adjudicate").click()
    eve.locator("#close-study").click()
    expect(eve.locator(".messages")).to_contain_text("Closed “Second reading”")
    eve.get_by_role("link", name="Agreement between the readers").click()
    expect(eve.locator("h1")).to_have_text("Agreement: Second reading")
    kappa, low, high = _kappa_row(eve, "ann · bob")
    assert f"{kappa:.2f}" == f"{cohen_kappa_score(ANN, BOB):.2f}"
    assert low <= kappa <= high
    fleiss, f_low, f_high = _kappa_row(eve, "All readers (Fleiss' kappa)")
    assert f_low <= fleiss <= f_high
    # No model was ever trained: the page must say so rather than show a model row.
    expect(eve.get_by_text(re.compile(r"no (trained )?model", re.IGNORECASE))).to_be_visible()
    expect(eve.locator("table.metrics td", has_text="the model ·")).to_have_count(0)

    # 5. eve adjudicates each disagreement by key, and writes the labels back into the project.
    eve.go_back()
    eve.reload()
    _adjudicate_all(eve)
    eve.get_by_role("button", name=re.compile(r"Write 3 adjudicated labels into the project")).click()
    expect(eve.locator(".messages")).to_contain_text("2 image(s) moved")
    moved = {items[1].image_id: ("crimson", "teal"), items[7].image_id: ("ochre", "crimson")}
    for image_id, (before, after) in moved.items():
        assert Image.objects.get(pk=image_id).label.name == after
    assert Image.objects.get(pk=items[5].image_id).label.name == "teal"
    eve.goto(f"{base}/projects/{project.pk}/audit/")
    for image_id, (before, after) in moved.items():
        row = eve.locator('#audit-entries tr[data-action="label.changed"]').filter(has_text=f"image {image_id} ")
        expect(row).to_have_count(1)
        expect(row.locator("td").nth(1)).to_have_text(re.compile(rf"^eve moved image {image_id}\b.*from {before} to {after}"))
    changes = AuditEntry.objects.filter(project_ref=project.pk, action="label.changed")
    assert changes.count() == 2 and set(changes.values_list("actor", flat=True)) == {"eve"}

    # 6. vic, a viewer: no Train, Upload or Delete on the project page, and a labeller's POST is 403.
    vic = _new_page(browser, base, "vic", _password("vic"))
    vic.goto(f"{base}/projects/{project.pk}/")
    expect(vic.locator("#sharing-link")).to_contain_text("you are viewer")
    expect(vic.get_by_role("button", name="Train")).to_have_count(0)
    expect(vic.locator("#train")).to_have_count(0)
    expect(vic.locator("form[enctype='multipart/form-data']")).to_have_count(0)
    expect(vic.get_by_role("button", name=re.compile("Upload|Delete"))).to_have_count(0)
    csrf = next(c["value"] for c in vic.context.cookies() if c["name"] == "csrftoken")
    refused = vic.request.post(f"{base}/projects/{project.pk}/classes/new/", form={"name": "sneaky"},
                               headers={"X-CSRFToken": csrf, "Referer": f"{base}/projects/{project.pk}/"})
    assert refused.status == 403
    assert not project.labels.filter(name="sneaky").exists()

    for page in (owner, ann, bob, eve, vic):
        assert page.evaluate("window.__cspViolations") == [], page.url
        assert not page.problems, page.problems


@pytest.mark.parametrize("open_signup", [True, False])
def test_signup_false_hides_the_sign_up_link(live_server, settings, watched_page, open_signup):
    settings.ALLOW_SIGNUP = open_signup  # what SIGNUP=false sets (transferapp/settings.py)
    page = watched_page
    page.goto(f"{live_server.url}/accounts/login/")
    link = page.get_by_role("link", name="Create an account")
    expect(link).to_have_count(1 if open_signup else 0)
    answer = page.request.get(f"{live_server.url}/accounts/signup/")
    assert answer.status == (200 if open_signup else 403)
    assert not page.problems, page.problems
