"""Similar cases beside a prediction: the training images the model finds most like an image.

The engine ranks the rows of the artifact's bank of training features (Trust.similar: cosine
similarity, from the prediction's own forward pass); this module keeps the rows that are still live
images of the run's project (a trashed, deleted or foreign image is never linked) and names each by
its image id and its class as it is now.
"""
from transferapp.engine import imaging
from transferapp.models import Image, TrainingRun

PAGE = 3  # beside each answer on the predict page, in the batch table and its CSV
API_MAX = 20  # the most `?similar=` may ask for
SPARE = 20  # extra candidates asked of the engine, for those trashed since the run trained


def candidates(k: int) -> int:
    """How many bank rows to ask the engine for, so that k live images are left after the filter."""
    return k + SPARE if k > 0 else 0


def link(run: TrainingRun, results: list[dict], k: int, exclude: int | None = None) -> None:
    """Replace each result's engine candidates ({key, label, similarity}) by at most k live images of
    the run's project, as {"image": pk, "label": its class now, "similarity"}; `exclude` leaves out
    one image (a mistake's own)."""
    keys = {int(c["key"]) for r in results for c in r.get("similar", ()) if str(c["key"]).isdigit()}
    live = dict(Image.objects.filter(project_id=run.project_id, pk__in=keys).values_list("pk", "label__name"))
    for result in results:
        if "similar" not in result:
            continue
        kept = []
        for case in result["similar"]:
            pk = int(case["key"]) if str(case["key"]).isdigit() else None
            if pk in live and pk != exclude:
                kept.append({"image": pk, "label": live[pk], "similarity": case["similarity"]})
        result["similar"] = kept[:k]


def for_stored_image(run: TrainingRun, predictor, image: Image, k: int = PAGE) -> list[dict]:
    """The training images most like one image of the project (itself left out): the results
    page's mistakes. One forward pass of its file."""
    with image.file.open("rb") as f:
        rgb = imaging.load_rgb(f.read())
    results, _ = predictor.predict_explained([rgb], keep_maps=False, similar=candidates(k) + 1)
    link(run, results, k, exclude=image.pk)
    return results[0].get("similar", [])


def with_percent(cases: list[dict]) -> list[dict]:
    """For the pages: each case with its similarity in percent."""
    return [{**case, "percent": round(100 * max(case["similarity"], 0.0))} for case in cases]
