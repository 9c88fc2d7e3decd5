"""What the labelling page and the API ask next (#24): the Inbox in the ranking's order as it stands
now (images flagged unsure since go last, new arrivals before them), the progress line, and "more
like this" (the Inbox images nearest to one image on cached features)."""
from __future__ import annotations

import numpy as np

from transferapp.labelling import ranking as inbox_ranking
from transferapp.labelling.inbox import inbox_count
from transferapp.models import Image, Project

SIMILAR_SHOWN = 24


def inbox_next(*, project: Project, n: int | None = 10) -> list[dict]:
    """The next `n` Inbox images to ask about, in asking order, each with the quick model's
    suggestion and why it is asked."""
    ranking = inbox_ranking.ranking_for(project)
    waiting = {image.pk: image for image in Image.inbox.filter(project=project)}
    unsure = {pk for pk, image in waiting.items() if image.inbox_unsure}
    order = asking_order(ranking.order, waiting.keys(), unsure)
    return [_item(waiting[pk], ranking.cards.get(str(pk))) for pk in order[:n]]


def asking_order(ranked: list[int], waiting, unsure: set[int]) -> list[int]:
    """The ranking's order of the images still waiting, then new arrivals (by id), the images
    flagged unsure last. Linear: each set is built once (an Inbox can hold tens of thousands)."""
    waiting = set(waiting)
    in_order = [pk for pk in ranked if pk in waiting]
    seen = set(in_order)
    order = in_order + sorted(pk for pk in waiting if pk not in seen)
    return [pk for pk in order if pk not in unsure] + [pk for pk in order if pk in unsure]


def _item(image: Image, card: dict | None) -> dict:
    card = card or {"label": "", "probability": None, "reason": inbox_ranking.REASON_NEW, "kind": "new"}
    suggestion = {"label": card["label"], "probability": card["probability"]} if card.get("label") else None
    return {"image": image.pk, "file": image.original_name, "suggestion": suggestion,
            "reason": card["reason"], "kind": card.get("kind", ""), "unsure": image.inbox_unsure}


def progress(*, project: Project) -> dict:
    """The progress line: labelled so far, left in the Inbox, the estimate, the plateau notice."""
    ranking = inbox_ranking.ranking_for(project)
    counts = inbox_count(project=project)
    estimate = inbox_ranking.estimate_for(project)  # live: the labels given since the last ranking count
    if "accuracy" in estimate:
        text = (f"quick model's estimated accuracy {estimate['accuracy']:.0%} "
                f"({estimate['low']:.0%}–{estimate['high']:.0%}, from {estimate['n']} random picks)")
    else:
        text = (f"estimated accuracy: needs more random picks ({estimate.get('n', 0)} of "
                f"{inbox_ranking.MIN_RANDOM_FOR_ESTIMATE} labelled)")
    return {**counts, "estimate": estimate, "estimate_text": text, "plateau": ranking.plateau,
            "plateau_text": ranking.plateau_reason, "status": ranking.status, "error": ranking.error,
            "ranked_at": ranking.computed_at.isoformat() if ranking.computed_at else "",
            "ranked_on": ranking.labels_at, "seconds": ranking.seconds}


def similar_in_inbox(*, project: Project, image: Image, k: int = SIMILAR_SHOWN) -> list[dict]:
    """The k Inbox images (the image itself left out) most like `image`, most similar first:
    cosine similarity of cached features (images not cached yet are left out) centred on the
    Inbox's mean (backbone features share a large common offset, which would put every pair near 1)."""
    others = list(Image.inbox.filter(project=project).exclude(pk=image.pk).order_by("pk"))
    if not others:
        return []
    # Cached features only: a backbone or a forward pass has no place in a web request; images not
    # yet cached (the worker caches each on arrival) are simply not offered.
    kept, features = inbox_ranking.cached_features_of([image, *others], inbox_ranking.project_base(project))
    if not kept or kept[0].pk != image.pk or len(kept) < 2:
        return []
    others = kept[1:]
    centred = features - features[1:].mean(0, keepdims=True)
    unit = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-8)
    similarity = unit[1:] @ unit[0]
    best = np.argsort(-similarity, kind="stable")[:k]
    return [{"image": others[i].pk, "file": others[i].original_name, "similarity": round(float(similarity[i]), 4)}
            for i in best]
