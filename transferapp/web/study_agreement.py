"""A reading study's agreement page and its CSV of reads (#26): editors any time (interim while the
study is open) unless they read in it, everyone with a role once it is closed (403 before: reading stays blind), a stranger
to the project 404. A reader of an open study gets 403 whatever their role (agreement.check_may_see). The figures come from studies/agreement.py; this module only checks and renders."""
import io

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django.utils.text import slugify

from transferapp.reporting import charts
from transferapp.storage import csvsafe
from transferapp.studies import agreement, forest
from transferapp.training import selectors as training_selectors


@login_required
def study_agreement(request, sid):
    study = agreement.study_for(request.user, sid)
    table = agreement.table_for_study(study)
    figures = agreement.compute(table)
    figures["interim"] = study.is_open
    figures["model_caveat"] = agreement.model_caveat(study) if figures["has_model"] else ""
    first, second = _pair_asked(request, table)
    context = {"study": study, "project": study.project, "figures": figures, "chart": forest.forest(_forest_rows(figures)),
               "bands": agreement.BANDS, "margin": agreement.SAME_MARGIN, "choices": _choices(table),
               "first": first, "second": second, "confusion": _confusion(table, first, second),
               # with no model at all, "the model's answers are not in yet" would promise rows that never come
               "project_has_model": figures["has_model"] or training_selectors.model_run(project=study.project) is not None}
    # htmx swaps only the confusion matrix when a reader is picked; Back (history restore) needs the page.
    partial = request.htmx and not request.htmx.history_restore_request
    response = render(request, "transferapp/studies/agreement.html" + ("#confusion" if partial else ""), context)
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
def study_agreement_csv(request, sid):
    """Every image's reads: image id, each reader's label, the majority, the adjudicated label, the model's."""
    study = agreement.study_for(request.user, sid)
    header, rows = agreement.csv_rows(agreement.table_for_study(study))
    out = io.StringIO()
    writer = csvsafe.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    name = slugify(study.name) or f"study-{study.pk}"
    response["Content-Disposition"] = f'attachment; filename="{name}-reads.csv"'
    return response


def _choices(table) -> list[tuple[str, str]]:
    """(value, shown) for the confusion matrix's pickers: the readers, then the model if it answered."""
    shown = [(name, name) for name in table.readers]
    if (table.model != agreement.stats.MISSING).any():
        shown.append((agreement.MODEL, "the model"))
    return shown


def _pair_asked(request, table) -> tuple[str, str]:
    """The two raters asked for (?a=&b=), each checked against the study's; else the first two readers."""
    known = [value for value, _ in _choices(table)]
    first, second = request.GET.get("a", ""), request.GET.get("b", "")
    defaults = (known + ["", ""])[:2]
    return (first if first in known else defaults[0]), (second if second in known else defaults[1])


def _confusion(table, first: str, second: str) -> dict | None:
    matrix = agreement.confusion(table, first, second)
    if matrix is None:
        return None
    names = {agreement.MODEL: "the model"}
    rows = charts.confusion_rows(matrix, table.classes)  # the results page's shading: agreement blue, the rest red
    return {"rows": rows, "first": names.get(first, first), "second": names.get(second, second),
            "n": sum(sum(row) for row in matrix), "same": first == second}


def _forest_rows(figures: dict) -> list[dict]:
    rows = [{"label": " · ".join(pair["readers"]), "kappa": pair["kappa"], "interval": pair["interval"], "kind": "pair"}
            for pair in figures["pairs"]]
    rows += [{"label": f"model · {row['reader']}", "kappa": row["kappa"], "interval": row["interval"], "kind": "model"}
             for row in figures["model"]]
    if len(figures["readers"]) > 2:
        fleiss = figures["fleiss"]
        rows.append({"label": "all readers (Fleiss)", "kappa": fleiss["kappa"], "interval": fleiss["interval"], "kind": "fleiss"})
    return rows
