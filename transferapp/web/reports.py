"""The training report: HTML, PDF and its image manifest."""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.utils.http import content_disposition_header

from transferapp.accounts import roles
from transferapp.reporting import reports as reporting_reports
from transferapp.training import selectors as training_selectors
from transferapp.web import bucket


def _report_run(request, pk):
    """The owner's version, else 404; a run that is not a finished version has no report."""
    run = training_selectors.run_get_for_user(user=request.user, need=roles.VIEWER, pk=pk)
    try:
        return reporting_reports.reportable_run(run)
    except reporting_reports.ReportUnavailable:
        raise Http404("No training report for this run") from None


@login_required
def run_report(request, pk):
    """The training report as one self-contained page; ?download=1 saves it as a file."""
    run = _report_run(request, pk)
    response = HttpResponse(reporting_reports.render_html(run), content_type="text/html; charset=utf-8")
    # The page needs nothing from anywhere: a policy that allows nothing else proves it in the browser.
    response["Content-Security-Policy"] = REPORT_POLICY
    if request.GET.get("download"):
        response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=reporting_reports.file_name(run, "html"))
    return response

REPORT_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'"


@login_required
def run_report_pdf(request, pk):
    run = _report_run(request, pk)
    response = HttpResponse(reporting_reports.render_pdf(run), content_type="application/pdf")
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=reporting_reports.file_name(run, "pdf"))
    return response


@login_required
def run_report_manifest(request, pk):
    """Every image the version used: id, file name, class, role and SHA-256."""
    run = _report_run(request, pk)
    response = HttpResponse(reporting_reports.manifest(run)[0], content_type=bucket.CSV_TYPE)
    response["Content-Disposition"] = content_disposition_header(
        as_attachment=True, filename=reporting_reports.file_name(run, "csv").replace("-report.csv", "-manifest.csv"))
    return response
