"""Findings of the outside review about the code's shape, each pinned by a behaviour it caused."""
import re
from pathlib import Path

import pytest
from django.urls import reverse

from tests.factories import project_with_images
from transferapp.web import forms

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


@pytest.mark.django_db
def test_the_training_form_on_the_project_page_offers_the_forms_own_choices(alice, user, monkeypatch):
    project = project_with_images(user)
    augmentation = forms.TrainForm.base_fields["augmentation"]
    monkeypatch.setattr(augmentation, "choices", [*augmentation.choices, ("extreme", "Extreme")])
    monkeypatch.setattr(forms.TrainForm.base_fields["epochs"], "max_value", 40)
    monkeypatch.setitem(forms.TrainForm.base_fields["epochs"].widget.attrs, "max", "40")
    page = alice.get(reverse("project_detail", args=[project.pk])).content.decode()
    assert '<option value="extreme">Extreme</option>' in page  # one list of choices, not two
    assert re.search(r'<input type="number" name="epochs" min="1" max="40"', page)


def test_templates_run_no_queries_of_their_own():
    """Related managers called from a template (`project.labels.all`, `.count`) hide queries where
    nobody looks for them: the views pass what a page shows."""
    offenders = []
    for template in TEMPLATES.rglob("*.html"):
        for number, line in enumerate(template.read_text().splitlines(), 1):
            if re.search(r"\.(labels|images|runs|imports)\.(all|count|filter|exists)\b", line):
                offenders.append(f"{template.name}:{number}: {line.strip()[:80]}")
    assert not offenders, offenders


@pytest.mark.django_db
def test_the_class_page_offers_the_other_classes_as_move_targets(alice, user):
    project = project_with_images(user, classes=("red", "blue", "green"), per_class=1)
    red = project.labels.get(name="red")
    page = alice.get(red.get_absolute_url()).content.decode()
    targets = re.findall(r'<option value="\d+">(\w+)</option>', page.split('id="move-target"')[1].split("</select>")[0])
    assert targets == ["blue", "green"]
