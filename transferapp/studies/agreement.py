"""A reading study's agreement figures (#26): Cohen's kappa for each pair of readers, Fleiss' kappa
for all, per-class agreement, the readers' confusion matrix, and the model against the readers,
with the sentence that compares them. The statistics are in `kappa.py` (numpy only); this module
turns a study's reads into a table of class codes and the figures into plain dicts (the page, the
API and the CSV all read them).

While a study is open only its non-reading editors see the figures; once it is closed everyone with a
role does (`check_may_see`, which every view and the API ask). Nothing here may reach a reader of an open
study, whatever that reader's role in the project.
"""
from itertools import combinations

import numpy as np
from django.core.exceptions import PermissionDenied
from django.http import Http404

from transferapp.accounts import roles
from transferapp.models import ReadingStudy, TrainingRun
from transferapp.studies import kappa as stats
from transferapp.studies import studies

# The difference in kappa, model against readers minus readers among themselves, small enough to
# call "about as well" when its whole 95% interval lies inside it. A convention we state on the
# page, not a law: 0.10 is half of one Landis & Koch band.
SAME_MARGIN = 0.10

# The confusion matrix's name for the model: a colon cannot be in a username, so no reader shadows it.
MODEL = ":model"

# Landis & Koch (1977), a convention for naming kappa values, not a test.
BANDS = [(0.0, "poor"), (0.20, "slight"), (0.40, "fair"), (0.60, "moderate"), (0.80, "substantial"), (1.0, "almost perfect")]


def band(value: float | None) -> str:
    if value is None:
        return ""
    if value < 0:
        return "poor"
    return next((name for top, name in BANDS[1:] if value <= top + 1e-12), "almost perfect")


class ReadsTable:
    """A study's reads as class codes: `codes` (images, readers), `model` and `adjudicated` (images),
    MISSING where there is no answer; `classes` the study's classes, then any other label seen."""

    def __init__(self, *, image_ids, readers, labels, model, adjudicated, classes):
        names = list(dict.fromkeys([*classes, *sorted({x for row in labels for x in row if x} | set(filter(None, model))
                                                         | set(filter(None, adjudicated)))]))
        index = {name: i for i, name in enumerate(names)}

        def code(values):
            return np.array([index[v] if v else stats.MISSING for v in values], dtype=np.int64)

        self.image_ids, self.readers, self.classes = list(image_ids), list(readers), names
        self.codes = (np.column_stack([code(column) for column in zip(*labels)]) if labels and readers
                      else np.full((len(self.image_ids), len(readers)), stats.MISSING, dtype=np.int64))
        self.model, self.adjudicated = code(model), code(adjudicated)

    @property
    def k(self) -> int:
        return max(len(self.classes), 1)


def study_for(user, study_id) -> ReadingStudy:
    """The study whose agreement `user` may see: its project's editors who do not read in it any time
    (marked interim while it is open), everyone with a role once it is closed. A stranger to the project gets 404; anyone else 403."""
    study = ReadingStudy.objects.select_related("project").filter(pk=study_id).first()
    if study is None:
        raise Http404("No such study.")
    role = roles.require(user, study.project, roles.VIEWER)
    check_may_see(study, role=role, reader=studies.is_reader(study, user))
    return study


def may_see(study: ReadingStudy, *, role: str | None, reader: bool) -> bool:
    """Blindness: while a study is open, no reader of it sees its figures, whatever their role (an
    editor or the owner who reads must not learn how the others read); the project's other editors
    see interim figures. Once it is closed, everyone with a role in the project, as every other
    result page (a viewer "sees everything")."""
    if not study.is_open:
        return role is not None
    return roles.at_least(role, roles.EDITOR) and not reader


def check_may_see(study: ReadingStudy, *, role: str | None, reader: bool) -> None:
    if may_see(study, role=role, reader=reader):
        return
    who = "its readers and the project's other members" if reader else "the project's members"
    raise PermissionDenied(f"The agreement opens to {who} when the study is closed: reading stays blind until then.")


def table_for_study(study) -> ReadsTable:
    """The study's reads, one row per image in the study's order, one column per reader (by username)."""
    items, readers, reads = studies.reads_table(study=study)
    labels = [[reads.get(item.pk, {}).get(reader.pk, "") for reader in readers] for item in items]
    return ReadsTable(image_ids=[item.image_id for item in items], readers=[r.get_username() for r in readers],
                      labels=labels, model=[item.model_label for item in items],
                      adjudicated=[item.adjudicated_label for item in items], classes=study.classes or [])


def for_study(study) -> dict:
    figures = compute(table_for_study(study))
    figures["interim"] = study.is_open
    figures["model_caveat"] = model_caveat(study) if figures["has_model"] else ""
    return figures


def model_caveat(study) -> str:
    """Why the model's figures may flatter it, in a sentence ("" when they need no warning): only the
    test set, or the validation images the model was scored on (unless it was then retrained on all
    images), are images it did not learn from. We
    do not tell here which study images were in its training set (that list lives with the model's
    files), so a study of a class or a selection carries the warning as a whole."""
    if study.source == "test" or (study.source == "validation" and not _retrained_on_all(study)):
        return ""
    if study.source == "validation":
        return ("The model that answered was retrained on all images after its validation, these ones included: "
                "its agreement with the readers is optimistic. For a fair comparison, start a study of the test set.")
    what = f"the class “{study.source[len('class:'):]}”" if study.source.startswith("class:") else "a selection of images"
    return (f"This study reads {what}, not the test set: the model may have trained on some of these images, "
            f"so its agreement with the readers is optimistic. For a fair comparison, start a study of the test set.")


def _retrained_on_all(study) -> bool:
    """Whether the model version that answered learnt from its validation images too (a refit)."""
    run = TrainingRun.objects.filter(project=study.project_id, version=study.model_version).first()
    return bool(run and ((run.metrics or {}).get("refit") or {}).get("done"))


def compute(table: ReadsTable) -> dict:
    """Every figure of the agreement page, as JSON-ready values (None where a figure cannot be computed,
    with the reason in "problem")."""
    codes, k = table.codes, table.k
    readers = list(range(codes.shape[1]))
    # One bootstrap of the images for every figure: readers' columns, then the model's.
    resampled = stats.Resampled(np.column_stack([codes, table.model]), k)
    everyone = np.all(codes != stats.MISSING, axis=1) if readers else np.zeros(len(codes), bool)
    fleiss = resampled.fleiss(readers) if len(readers) >= 2 else {
        "kappa": None, "interval": None, "n": 0, "problem": "a study needs two readers"}
    pairs = [{"readers": [table.readers[i], table.readers[j]], **resampled.cohen(i, j)}
             for i, j in combinations(readers, 2)]
    has_model = bool((table.model != stats.MISSING).any())
    figures = {
        "n_images": len(table.image_ids),
        "n_read_by_all": int(everyone.sum()),
        "classes": table.classes,
        "readers": table.readers,
        "pairs": [_with_band(pair) for pair in pairs],
        "fleiss_kappa": fleiss["kappa"],
        "fleiss": _with_band(fleiss),
        "per_class": [{"name": name, **row} for name, row in zip(table.classes, stats.specific_agreement(codes, k))],
        "has_model": has_model,
        "model": _model_against_readers(table, resampled) if has_model else [],
        "readers_against_others": _readers_against_others(table),
        "model_accuracy": _model_accuracy(table) if has_model else None,
        "n_adjudicated": int((table.adjudicated != stats.MISSING).sum()),
        "resamples": stats.RESAMPLES,
    }
    figures["comparison"] = _comparison(table, resampled) if has_model and len(table.readers) >= 2 else None
    return figures


def _with_band(row: dict) -> dict:
    return {**row, "band": band(row.get("kappa"))}


def _model_against_readers(table: ReadsTable, resampled) -> list[dict]:
    model = len(table.readers)  # the model's column comes after the readers'
    return [_with_band({"reader": name, **resampled.cohen(model, i)})
            for i, name in enumerate(table.readers)]


def _readers_against_others(table: ReadsTable) -> list[dict]:
    """Each reader's accuracy against the majority of the OTHER readers (ties: no majority, left out),
    the yardstick for the model's accuracy against the majority of all readers."""
    rows = []
    for i, name in enumerate(table.readers):
        others = np.delete(table.codes, i, axis=1)
        truth = stats.majority(others, table.k)
        rows.append({"reader": name, **stats.accuracy(table.codes[:, i], truth),
                     "ties": _ties(others, table.k), "against_adjudicated": stats.accuracy(table.codes[:, i], table.adjudicated)})
    return rows


def _ties(codes: np.ndarray, k: int) -> int:
    """Images read by someone whose top classes tie (no majority)."""
    read = (codes != stats.MISSING).any(axis=1)
    return int((read & (stats.majority(codes, k) == stats.MISSING)).sum())


def _model_accuracy(table: ReadsTable) -> dict:
    return {"majority": {**stats.accuracy(table.model, stats.majority(table.codes, table.k)),
                         "ties": _ties(table.codes, table.k)},
            "adjudicated": stats.accuracy(table.model, table.adjudicated)}


def _comparison(table: ReadsTable, resampled) -> dict:
    gap = resampled.kappa_gap()  # the model's column is the last
    return {**gap, "margin": SAME_MARGIN, "sentence": comparison_sentence(gap, readers=len(table.readers))}


def comparison_sentence(gap: dict, *, readers: int) -> str:
    """The measured sentence: read from the interval of the difference, never from two intervals
    overlapping (overlap does not make two kappas equal)."""
    if gap.get("difference") is None:
        return f"No comparison of the model with the readers yet: {gap.get('problem') or 'too few images'}."
    each = "the other reader" if readers == 2 else "each other"
    interval = gap.get("interval")
    if interval is None:
        return "No comparison of the model with the readers: too few varied images to put an interval on the difference."
    diff, (lo, hi) = gap["difference"], interval
    said = (f"the model's mean kappa against the readers minus the readers' mean kappa with {each} is {diff:+.2f} "
            f"(95% interval {lo:+.2f} to {hi:+.2f}, {gap['n']} images everyone read)")
    if lo > 0:
        return f"The model agrees with the readers more than they agree with {each}: {said}."
    if hi < 0:
        return f"The model agrees with the readers less than they agree with {each}: {said}."
    if -SAME_MARGIN <= lo and hi <= SAME_MARGIN:
        return (f"The model agrees with each reader about as well as they agree with {each}: {said}, "
                f"inside ±{SAME_MARGIN:.2f}.")
    return (f"These images cannot yet tell whether the model agrees with the readers as well as they agree with {each}: "
            f"{said}, wider than ±{SAME_MARGIN:.2f} either way. More images would narrow it.")


def confusion(table: ReadsTable, first: str, second: str) -> list[list[int]] | None:
    """Rater `first`'s classes in rows against `second`'s in columns, on images both answered; a rater
    is a reader's username or MODEL. None for an unknown name."""
    columns = {name: table.codes[:, i] for i, name in enumerate(table.readers)} | {MODEL: table.model}
    if first not in columns or second not in columns:
        return None
    return stats.pair_table(columns[first], columns[second], table.k).tolist()


def csv_rows(table: ReadsTable) -> tuple[list[str], list[list]]:
    """The header and one row per image: image id, each reader's label, the majority (empty on a tie),
    the adjudicated label, the model's answer."""
    names = table.classes

    def label(code):
        return names[code] if code != stats.MISSING else ""

    majority = stats.majority(table.codes, table.k)
    header = ["image", *table.readers, "majority", "adjudicated", "model"]
    rows = [[image_id, *(label(c) for c in table.codes[row]), label(majority[row]),
             label(table.adjudicated[row]), label(table.model[row])]
            for row, image_id in enumerate(table.image_ids)]
    return header, rows
