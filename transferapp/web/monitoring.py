"""The monitoring page (#25): how a project's model does at work, drawn from its prediction log."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from transferapp.accounts import roles
from transferapp.library import selectors as library_selectors
from transferapp.reporting import monitor_charts, monitoring


@login_required
def project_monitoring(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, need=roles.VIEWER, pk=pk)
    days = int(request.GET["days"]) if request.GET.get("days") in {str(d) for d in monitoring.PERIODS} else monitoring.DEFAULT_DAYS
    figures = monitoring.monitoring(project, days=days)
    context = {"project": project, "days": days, "periods": monitoring.PERIODS, "figures": figures,
               "drift": figures["drift"], "live_warning": monitoring.live_warning(figures)}
    if figures["predictions"]:
        by_day = figures["by_day"]
        context["charts"] = {
            "per_day": monitor_charts.predictions_per_day(by_day),
            "abstained": monitor_charts.daily_line(
                by_day, "abstained_rate", "“Don't know” answers and confidence per day", "“don't know” answers",
                also=("confidence_median", "median probability of the top class")),
            "confidence": monitor_charts.confidence_chart(figures["confidence"]),
            "mix": monitor_charts.class_mix_chart(figures["class_mix"]),
            "novelty": monitor_charts.novelty_per_day(by_day, figures["novelty_threshold"]),
            "unlike": monitor_charts.daily_line(
                by_day, "unlike_share", "Images unlike anything the model was trained on", "share of the day's images",
                reference=figures["drift"]["expected_share"], reference_text="expected by chance"),
        }
        context["accuracy_chart"] = monitor_charts.accuracy_chart(figures["live_accuracy"], figures["validation"])
    return render(request, "transferapp/monitoring.html", context)
