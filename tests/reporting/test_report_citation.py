"""Issue 32 items 15 and 16: the PDF report is tagged for screen readers, and its citation names the
authors and affiliation the owner gave (not the account name)."""
import io

import pytest
from django.urls import reverse
from pypdf import PdfReader

from tests.factories import project_with_images
from tests.reporting.test_report import _pdf_text, _version
from transferapp.models import Project

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_pdf_report_is_tagged_for_screen_readers(alice, user):
    project = project_with_images(user, per_class=5)
    version = _version(project)
    pdf = alice.get(reverse("run_report_pdf", args=[version.pk])).content
    root = PdfReader(io.BytesIO(pdf)).trailer["/Root"]
    assert bool(root["/MarkInfo"]["/Marked"])  # pypdf BooleanObject
    tree = root["/StructTreeRoot"].get_object()
    assert tree.get("/K") is not None  # a structure with content, not an empty root
    assert root.get("/Lang")  # the language a screen reader speaks it in


def test_the_citation_names_the_authors_and_affiliation_the_owner_gave(alice, user):
    project = project_with_images(user, per_class=5)
    version = _version(project)
    page = alice.get(project.get_absolute_url()).content.decode()
    assert 'name="report_authors"' in page and 'name="report_affiliation"' in page
    before = alice.get(reverse("run_report", args=[version.pk])).content.decode()
    assert f"author = {{{user.get_username()}}}" in before  # nothing given: the account's name
    alice.post(reverse("project_intended_use", args=[project.pk]),
               {"intended_use": "Sorting colours.", "report_authors": "  Ana  Souza and Li   Wei ",
                "report_affiliation": "Dept. of Radiology, Example University"})
    project = Project.objects.get(pk=project.pk)
    assert (project.report_authors, project.intended_use) == ("Ana Souza and Li Wei", "Sorting colours.")
    html = alice.get(reverse("run_report", args=[version.pk])).content.decode()
    assert "Ana Souza and Li Wei (Dept. of Radiology, Example University). “" in html
    assert "author = {Ana Souza and Li Wei}" in html and "organization = {Dept. of Radiology, Example University}" in html
    assert f"author = {{{user.get_username()}}}" not in html
    pdf = alice.get(reverse("run_report_pdf", args=[version.pk])).content
    assert "ana souza and li wei (dept. of radiology, example university)" in _pdf_text(pdf)


def test_an_overlong_affiliation_is_refused_with_a_message_and_changes_nothing(alice, user):
    project = project_with_images(user, per_class=5)
    response = alice.post(reverse("project_intended_use", args=[project.pk]),
                          {"intended_use": "", "report_authors": "Ana", "report_affiliation": "x" * 301}, follow=True)
    assert "under 300 characters" in response.content.decode()
    assert Project.objects.get(pk=project.pk).report_authors == ""
