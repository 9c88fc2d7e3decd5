"""Every URL pattern of the web pages, for every role (#26): a stranger gets a 404 on everything, a
role below what the URL needs a 403, a role at or above it gets through (the answer may still be a
refusal of the input, never a 403 or the access check's 404).

The table below classifies each pattern; a pattern missing from it fails the first test, so a new
page has to say what role it needs."""
import re

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from tests.factories import inbox_with_images, member, project_with_images
from tests.library.test_reviews import make_prediction
from transferapp.accounts import api_keys, roles
from transferapp.studies import studies
from transferapp.models import (
    BatchPrediction,
    ImportJob,
    Membership,
    TrainingRun,
    Webhook,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("queue")]

V, L, E, O = roles.VIEWER, roles.LABELLER, roles.EDITOR, roles.OWNER
ANY = "any signed-in user"  # pages of the user's own (the project list), not of one project
SKIPPED_PREFIXES = ("api/v1/", "admin/", "accounts/")
SKIPPED_NAMES = {"healthz"}

# url name: (the role it needs, the methods it answers). A read page is walked with GET, an
# action (require_POST) with POST; the predict page and the project list answer both.
EXPECT = {
    "home": (ANY, "GET"), "project_list": (ANY, "GET POST"),
    "project_detail": (V, "GET"), "project_rename": (E, "POST"), "project_delete": (O, "POST"),
    "project_sharing": (V, "GET"), "sharing_add": (O, "POST"), "sharing_change": (O, "POST"),
    "sharing_remove": (O, "POST"), "sharing_leave": (V, "POST"),
    "label_create": (L, "POST"), "label_detail": (V, "GET"), "label_rename": (E, "POST"), "label_delete": (E, "POST"),
    "project_near_duplicates": (V, "GET"), "project_image_options": (E, "POST"), "project_class_order": (E, "POST"),
    "label_upload": (L, "POST"), "label_bulk": (L, "POST"),
    "inbox_page": (V, "GET"), "inbox_upload": (L, "POST"), "inbox_bulk": (L, "POST"), "images_restore": (L, "POST"),
    "training_start": (E, "POST"), "predict": (V, "GET POST"), "project_monitoring": (V, "GET"),
    "import_create": (L, "POST"), "import_detail": (V, "GET"),
    "image_thumbnail": (V, "GET"), "image_file": (V, "GET"), "image_delete": (L, "POST"),
    "image_relabel": (L, "POST"), "image_confirm": (L, "POST"),
    "run_trust_settings": (E, "POST"), "run_detail": (V, "GET"), "run_cancel": (E, "POST"), "run_retry": (E, "POST"),
    "run_delete": (E, "POST"), "run_download": (E, "GET"),
    "version_compare": (V, "GET"), "run_publish": (E, "POST"), "run_export": (E, "POST"),
    "run_export_download": (E, "GET"),
    "run_report": (V, "GET"), "run_report_pdf": (V, "GET"), "run_report_manifest": (V, "GET"),
    "project_intended_use": (E, "POST"), "project_prediction_log": (E, "POST"),
    "api_key_create": (E, "POST"), "api_key_revoke": (E, "POST"),
    "webhooks_page": (E, "GET"), "webhook_create": (E, "POST"), "webhook_toggle": (E, "POST"),
    "webhook_delete": (E, "POST"), "webhook_test": (E, "POST"),
    "predict_batch": (V, "POST"), "batch_detail": (V, "GET"), "batch_download": (V, "GET"),
    "run_heatmap": (V, "GET"), "run_image_heatmap": (V, "GET"), "run_image_similar": (V, "GET"),
    "project_map": (V, "GET"), "project_map_data": (V, "GET"), "project_map_action": (L, "POST"),
    "review_queue": (V, "GET"), "review_add_all": (L, "POST"),
    "labelling_page": (L, "GET"), "labelling_queue": (L, "GET"), "labelling_act": (L, "POST"),
    "labelling_similar": (L, "GET"),
    "prediction_image": (V, "GET"), "prediction_review": (L, "POST"), "prediction_review_undo": (L, "POST"),
    "prediction_add": (L, "POST"),
    "audit_log": (E, "GET"), "audit_log_csv": (E, "GET"),
    "study_list": (V, "GET"), "study_new": (E, "GET POST"), "study_image_file": (V, "GET"),
    "study_read": (L, "GET"),  # and a reader of the study: see NOT_A_READER
    "study_adjudicate": (E, "GET"), "study_close": (E, "POST"), "study_write_back": (E, "POST"),
    "study_agreement": (E, "GET"), "study_agreement_csv": (E, "GET"),  # while the study is open
}
# Reading is for the study's readers (the labeller walker and a spare labeller): an owner or editor
# who is not one of them may adjudicate, not read.
NOT_A_READER = {("study_read", "owner"), ("study_read", E)}
# Run last: after a member leaves, the rest of the walk would only see 404s.
LAST = ("sharing_leave",)
WALKERS = ["owner", E, L, V, "stranger"]
# The 404 of the access check (get_object_or_404 over the projects the user can see, or roles.require),
# told apart from a page's own 404 ("no model for this run") by its message.
ACCESS_404 = re.compile(r"^(No \w+ matches the given query\.|No such project\.)$")


def _patterns():
    from transferapp.urls import urlpatterns

    for pattern in urlpatterns:
        route = str(pattern.pattern)
        if route.startswith(SKIPPED_PREFIXES) or getattr(pattern, "name", None) in SKIPPED_NAMES:
            continue
        yield pattern


def test_every_web_url_is_classified():
    names = [getattr(p, "name", None) for p in _patterns()]
    missing = [str(p.pattern) for p in _patterns() if getattr(p, "name", None) not in EXPECT]
    assert not missing, f"classify these URLs in EXPECT (the role they need): {missing}"
    assert not set(EXPECT) - set(names), f"EXPECT names URLs that no longer exist: {set(EXPECT) - set(names)}"


def _world(tmp_path):
    """One project with a row of each kind a URL names, spares for the URLs that delete theirs."""
    users = get_user_model().objects
    owner = users.create_user("walk-owner", password="walk-owner-long-password-1")
    project = project_with_images(owner, classes=("red", "blue"), per_class=2)
    red, blue = project.labels.get(name="red"), project.labels.get(name="blue")
    walkers = {"owner": owner, "stranger": users.create_user("walk-stranger", password="x-long-password-1")}
    walkers.update({role: member(project, f"walk-{role}", role) for role in (E, L, V)})
    spare_member = Membership.objects.create(project=project, user=users.create_user("walk-spare"), role=V)
    run = TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", status="succeeded", version=1,
                                     metrics={"accuracy": 0.9, "classes": ["blue", "red"]})
    spare_run = TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", status="succeeded", version=2)
    hook = {"project": project, "url": "https://hooks.example.com/x", "events": ["training.finished"], "secret": "whsec_dGVzdA=="}
    webhook, spare_webhook = Webhook.objects.create(**hook), Webhook.objects.create(**hook)
    key, _ = api_keys.api_key_create(project=project)
    image, spare_image = list(red.images.all()[:2])
    (tmp_path / BatchPrediction.CSV).write_text("file,top_label\nx.png,red\n", encoding="utf-8")
    batch = BatchPrediction.objects.create(project=project, run=run, version=1, source_name="x.zip", status="done", total=1,
                                           done=1, folder=str(tmp_path), csv_path=str(tmp_path / BatchPrediction.CSV))
    inboxed = inbox_with_images(project, colors=("red",), per_color=1)[0]
    spare_reader = member(project, "walk-spare-reader", L)
    study = studies.study_create(project=project, name="Walk", readers=[walkers[L], spare_reader],
                                 images=[image.pk, spare_image.pk], created_by=owner)
    ids = {
        "pk": project.pk, "project_pk": project.pk, "label": red.pk, "image": image.pk, "spare_image": spare_image.pk,
        "inbox_image": inboxed.pk, "run": run.pk, "spare_run": spare_run.pk, "member": spare_member.pk,
        "job": ImportJob.objects.create(project=project, source_name="x.zip", status="done").pk,
        "batch": batch.pk,
        "prediction": make_prediction(project, audit=True).pk, "webhook": webhook.pk, "spare_webhook": spare_webhook.pk,
        "key": key.pk, "blue": blue.pk, "study": study.pk, "study_item": study.items.first().pk,
    }
    return walkers, ids


def _kwargs(name, route, ids):
    """The URL's arguments: the project's ids, a spare where the URL deletes its object."""
    spare = {"run_delete": "spare_run", "image_delete": "spare_image", "webhook_delete": "spare_webhook"}
    if route.startswith("projects/"):
        kwargs = {"pk": ids["pk"], "project_pk": ids["pk"], "image_pk": ids["inbox_image"], "member_pk": ids["member"]}
        if "<int:project_pk>" in route:
            kwargs["pk"] = ids["label"]
        return kwargs
    first = route.split("/")[0]
    if not first:
        return {}  # home
    if first == "studies":
        return {"sid": ids["study"], "item_pk": ids["study_item"]}
    obj = {"images": "image", "runs": "run", "imports": "job", "api-keys": "key", "batches": "batch",
           "predictions": "prediction", "webhooks": "webhook"}[first]
    return {"pk": ids[spare.get(name, obj)], "image_pk": ids["image"], "digest": "0" * 64, "class_index": 0}


def _urls(ids):
    walk = []
    for pattern in _patterns():
        route, name = str(pattern.pattern), pattern.name
        kwargs = {k: v for k, v in _kwargs(name, route, ids).items() if k in pattern.pattern.converters}
        need, methods = EXPECT[name]
        for method in methods.split():
            walk.append((name, method, reverse(name, kwargs=kwargs), need))
    return sorted(walk, key=lambda row: (row[0] in LAST, row[1] == "POST"))  # reads first, leaving last


def _expected(who: str, need: str, name: str = "") -> str:
    if (name, who) in NOT_A_READER:
        return "403"
    if need == ANY:
        return "through"
    if who == "stranger":
        return "404"
    return "through" if roles.at_least(O if who == "owner" else who, need) else "403"


def _outcome(response) -> str:
    if response.status_code == 403:
        return "403"
    if response.status_code == 404:
        context = response.context
        exception = str(context.get("exception", "")) if context is not None else ""
        return "404" if ACCESS_404.match(exception) else "through"  # a page's own 404 (no model file...)
    return "through"


@pytest.mark.parametrize("who", WALKERS)
def test_each_role_gets_what_each_url_needs(client, who, tmp_path):
    walkers, ids = _world(tmp_path)
    client.force_login(walkers[who])
    data = {"target": ids["blue"]}  # relabel/move need a class of the project, else that is a 404 too
    failures = []
    for name, method, url, need in _urls(ids):
        try:
            response = client.get(url) if method == "GET" else client.post(url, data)
        except Exception as exc:  # noqa: BLE001 (a crash is one more failure, named with its URL)
            failures.append(f"{method} {url} ({name}) as {who}: raised {exc!r}")
            continue
        got, wanted = _outcome(response), _expected(who, need, name)
        if got != wanted:
            failures.append(f"{method} {url} ({name}) as {who}: {response.status_code} ({got}), wanted {wanted}")
    assert not failures, "\n".join(failures)


def test_a_refusal_is_a_friendly_page(client, tmp_path):
    walkers, ids = _world(tmp_path)
    client.force_login(walkers[V])
    response = client.post(reverse("project_rename", args=[ids["pk"]]), {"name": "mine now"})
    page = response.content.decode()
    assert response.status_code == 403
    assert "Your role does not allow this" in page and "This needs the editor role" in page and "Traceback" not in page
