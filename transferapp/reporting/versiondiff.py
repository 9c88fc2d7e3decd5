"""Version diff: which evaluation images two versions answered differently, and their per-class
figures recomputed on the images both of them scored, so the two columns are like for like.

Pure: a run's stored metrics in, plain dicts out (no database, no files). "Before" and "after" are
the two versions the user picked; "fixed" means wrong before and right after, whatever their order.
"""
from transferapp.engine.metrics import rate

GROUPS = ("fixed", "broken", "still_wrong")
SHOWN_PER_GROUP = 60  # thumbnails per group on the page; the count above them is the full one


def image_predictions(metrics: dict, classes: list[str]) -> tuple[dict[str, dict], str]:
    """{image key: {"true", "predicted", "confidence"}} for every image the run scored, and where
    that came from: "stored" (one row per image), "cells" (a run from before those rows: the
    confusion matrix's cells give both classes, but only its mistakes kept a confidence) or "none"."""
    rows = metrics.get("eval_predictions")
    if rows is not None:
        return {str(k): _prediction(classes, t, p, c) for k, t, p, c in rows}, "stored"
    cells = metrics.get("confusion_keys")
    if not cells:
        return {}, "none"
    confidence = {str(m["key"]): m.get("confidence") for m in metrics.get("mistakes") or []}
    found = {str(key): _prediction(classes, t, p, confidence.get(str(key)))
             for t, row in enumerate(cells) for p, keys in enumerate(row) for key in keys}
    return found, "cells"


def _prediction(classes, true: int, predicted: int, confidence) -> dict:
    return {"true": classes[true], "predicted": classes[predicted], "confidence": confidence}


def compare(before: dict[str, dict], after: dict[str, dict]) -> dict:
    """Both versions' answers on the images both scored. An image whose class differs between the
    two (relabelled in between) has no single right answer to judge the change by: it is counted
    and left out, like the images only one version scored."""
    both = before.keys() & after.keys()
    relabelled = {k for k in both if before[k]["true"] != after[k]["true"]}
    common = sorted(both - relabelled, key=_key_order)
    groups = {name: [] for name in GROUPS}
    for key in common:
        group = change_group(before[key], after[key])
        if group:
            groups[group].append({"key": key, "before": before[key], "after": after[key]})
    for rows in groups.values():  # the most confident new answer first: the surest gain or loss
        rows.sort(key=lambda r: -(r["after"]["confidence"] or 0))
    return {"common": common, "relabelled": len(relabelled), "groups": groups,
            "only_before": len(before.keys() - both), "only_after": len(after.keys() - both),
            "unchanged": len(common) - sum(len(rows) for rows in groups.values())}


def change_group(before: dict, after: dict) -> str | None:
    """fixed (wrong → right), broken (right → wrong), still_wrong (another wrong answer), or None
    (the same answer both times)."""
    right_before, right_after = before["predicted"] == before["true"], after["predicted"] == after["true"]
    if right_before != right_after:
        return "fixed" if right_after else "broken"
    if not right_after and before["predicted"] != after["predicted"]:
        return "still_wrong"
    return None


def _key_order(key: str):
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def figures(predictions: dict[str, dict], keys: list[str], classes: list[str]) -> dict:
    """Accuracy and each class's precision and recall over `keys`, each with k, n and its Wilson
    interval (the results page's kind of figure, on these images only)."""
    rows = [predictions[k] for k in keys]
    per_class = {}
    for name in classes:
        found = [r["predicted"] == name for r in rows if r["true"] == name]
        called = [r["true"] == name for r in rows if r["predicted"] == name]
        per_class[name] = {"recall": rate(sum(found), len(found)), "precision": rate(sum(called), len(called))}
    return {"accuracy": rate(sum(r["predicted"] == r["true"] for r in rows), len(rows)), "per_class": per_class}


def class_names(before: list[str], after: list[str]) -> list[str]:
    """Both versions' classes: the first one's order, then any class only the second one knows."""
    return list(before) + [name for name in after if name not in before]
