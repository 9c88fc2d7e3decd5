"""A reading study's agreement in the REST API (#26), on web.api's `api` (transferapp/urls.py imports
this module before it mounts api.urls).

GET /studies/{sid}/agreement → {"n_images", "pairs": [{"readers": [A, B], "kappa", "interval"}],
"fleiss_kappa", "model": [{"reader", "kappa"}], ...}: the same figures as the agreement page.
Who: the project's editors who do not read in the study (and a project key, which acts as an editor of
its own project); while the study is open any reader of it gets 403, whatever their role (reading stays
blind); once it is closed, everyone with a role; anyone else with a role 403; a
stranger to the project 404."""
from django.http import Http404
from ninja import Schema

from transferapp.accounts import roles
from transferapp.models import ReadingStudy
from transferapp.studies import agreement, studies
from transferapp.web.api import _errors, api
from transferapp.web.api_access import _project_for_key, caller_user


class KappaOut(Schema):
    kappa: float | None
    interval: list[float] | None  # [low, high] of the 95% bootstrap interval; null when it cannot be given
    n: int  # images both (or all) read
    band: str  # Landis & Koch's name for the value (a convention)
    problem: str  # why kappa is null, in a sentence; "" otherwise


class PairOut(KappaOut):
    readers: list[str]
    observed: float | None  # raw agreement


class ModelKappaOut(KappaOut):
    reader: str
    observed: float | None


class AccuracyOut(Schema):
    accuracy: float | None
    interval: list[float] | None
    n: int
    hits: int


class ReaderAccuracyOut(AccuracyOut):
    reader: str
    ties: int  # images left out because the other readers' top classes tie
    against_adjudicated: AccuracyOut


class ClassAgreementOut(Schema):
    name: str  # the class
    agreement: float | None  # specific agreement
    reads: int


class ComparisonOut(Schema):
    difference: float | None  # model's mean kappa against readers minus readers' mean pairwise kappa
    interval: list[float] | None
    n: int
    margin: float
    sentence: str


class AgreementOut(Schema):
    n_images: int
    n_read_by_all: int
    interim: bool  # the study is still open: figures may change
    classes: list[str]
    readers: list[str]
    pairs: list[PairOut]
    fleiss_kappa: float | None
    fleiss: KappaOut
    per_class: list[ClassAgreementOut]
    model: list[ModelKappaOut]
    model_accuracy: dict | None  # {"majority": accuracy + "ties", "adjudicated": accuracy}
    readers_against_others: list[ReaderAccuracyOut]
    comparison: ComparisonOut | None
    n_adjudicated: int
    model_caveat: str  # why the model's figures may be optimistic (it may have trained on these images); "" if not


@api.get("/studies/{sid}/agreement", response={200: AgreementOut, **_errors(401, 403, 404, 429)})
def study_agreement(request, sid: int):
    """Cohen's kappa of each pair of readers, Fleiss' kappa of all, each with a 95% bootstrap interval,
    per-class agreement, and the model against the readers."""
    study = ReadingStudy.objects.filter(pk=sid).first()
    if study is None:
        raise Http404("No such study.")
    user = caller_user(request)
    if user is None:  # a project key: an editor of its own project, a stranger to any other
        _project_for_key(request, study.project_id, need=roles.EDITOR)
    else:
        project = _project_for_key(request, study.project_id, need=roles.VIEWER)
        agreement.check_may_see(study, role=roles.role_of(user, project), reader=studies.is_reader(study, user))
    return agreement.for_study(study)
