"""Live accuracy (#25): how often each version was right on real work, from the random audit
sample of its logged predictions that someone reviewed. Only the audit sample counts: the "don't
know" and low-confidence predictions a reviewer also labels were chosen for being hard, and would
bias the figure down. Nor do the images the model learnt from (seen_in_training): it knows those,
and they would bias the figure up."""
from django.db.models import Count, F, Q

from transferapp.engine.metrics import wilson_interval
from transferapp.models import Prediction, Project


def live_accuracy(project: Project, since=None) -> list[dict]:
    """One {"version", "k", "n", "interval"} per version with reviewed audit predictions (newest
    version first); interval is the 95% Wilson interval [low, high] of k/n."""
    rows = Prediction.objects.filter(project=project, audit=True, seen_in_training=False).exclude(review_label="")
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    counts = (rows.values("version")
              .annotate(n=Count("pk"), k=Count("pk", filter=Q(review_label=F("top_label"))))
              .order_by("-version"))
    return [{"version": row["version"], "k": row["k"], "n": row["n"],
             "interval": list(wilson_interval(row["k"], row["n"]))} for row in counts]


def intervals_disagree(live: list[float] | None, validation: list[float] | None) -> bool:
    """True when live accuracy's interval and the validation figure's do not overlap: the page then
    warns that the model does worse (or better) on real work than its validation promised."""
    if not live or not validation:
        return False
    return live[1] < validation[0] or live[0] > validation[1]


def version_live(run) -> dict | None:
    """What a version's results page shows beside its validation figure: live accuracy from the
    reviewed audit sample (None until one is reviewed), whether its interval and the validation
    one disagree, and how many of the version's reviews came from the queue and from the API.
    None for a run that is not a version or whose predictions were never logged."""
    if not run.version:
        return None
    logged = Prediction.objects.filter(project_id=run.project_id, version=run.version)
    if not logged.exists():
        return None
    live = next((row for row in live_accuracy(run.project) if row["version"] == run.version), None)
    sources = dict(logged.exclude(review_label="").order_by().values_list("review_source").annotate(n=Count("pk")))
    validation = (run.metrics or {}).get("accuracy_ci")
    return {"live": live, "validation": validation,
            "disagree": bool(live) and intervals_disagree(live["interval"], validation),
            "worse": bool(live and validation) and live["interval"][1] < validation[0],
            "from_queue": sources.get(Prediction.ReviewSource.QUEUE, 0),
            "from_api": sources.get(Prediction.ReviewSource.API, 0),
            "audit_waiting": logged.filter(audit=True, review_label="").count()}
