import numpy as np
import pytest

from transferapp.engine import TrainingCancelled, embed, precompute
from transferapp.engine.zoo import create_backbone

from .conftest import draw_shape


@pytest.fixture(scope="module")
def backbone():
    return create_backbone("efficientnet_lite0", image_size=64)


def _count_forwards(backbone):
    calls = []
    handle = backbone.model.register_forward_hook(lambda m, i, o: calls.append(len(o)))
    return calls, handle


def _paths(shapes_dir):
    return sorted(str(p) for p in shapes_dir.rglob("*.png"))[:6]


def test_second_embed_is_served_from_the_cache(shapes_dir, tmp_path, backbone):
    paths = _paths(shapes_dir)
    calls, handle = _count_forwards(backbone)
    try:
        first = embed(paths, backbone, cache_dir=tmp_path, batch_size=4)
        assert sum(calls) == 6
        calls.clear()
        second = embed(paths, backbone, cache_dir=tmp_path, batch_size=4)
        assert calls == []  # no forward pass at all
    finally:
        handle.remove()
    np.testing.assert_array_equal(first, second)
    assert first.shape == (6, 1280)


def test_only_new_or_changed_images_are_recomputed(shapes_dir, tmp_path, backbone):
    paths = _paths(shapes_dir)
    embed(paths, backbone, cache_dir=tmp_path)
    changed = tmp_path / "changed.png"
    draw_shape("red_circle", seed=1).save(changed)
    calls, handle = _count_forwards(backbone)
    try:
        embed(paths + [str(changed)], backbone, cache_dir=tmp_path)
        assert sum(calls) == 1
        calls.clear()
        draw_shape("red_circle", seed=2).save(changed)  # same path, new content
        embed([str(changed)], backbone, cache_dir=tmp_path)
        assert sum(calls) == 1
    finally:
        handle.remove()


def test_base_size_and_view_are_part_of_the_cache_key(shapes_dir, tmp_path, backbone):
    paths = _paths(shapes_dir)[:2]
    embed(paths, backbone, cache_dir=tmp_path)
    bigger = create_backbone("efficientnet_lite0", image_size=96)
    renamed = create_backbone("efficientnet_lite0", image_size=64)
    renamed.name = "another_base"  # stands in for a different base without needing its weights
    for other, view in ((bigger, "orig"), (renamed, "orig"), (backbone, "flip")):
        calls, handle = _count_forwards(other)
        try:
            embed(paths, other, cache_dir=tmp_path, view=view)
        finally:
            handle.remove()
        assert sum(calls) == 2, (other.name, other.preprocessing["crop"], view)


def test_precompute_fills_the_cache_used_by_training(shapes_dir, tmp_path, backbone):
    paths = _paths(shapes_dir)
    assert precompute(paths, "efficientnet_lite0", tmp_path, image_size=64) == 6
    calls, handle = _count_forwards(backbone)
    try:
        embed(paths, backbone, cache_dir=tmp_path)
    finally:
        handle.remove()
    assert calls == []


def test_embed_stops_when_asked(shapes_dir, backbone):
    with pytest.raises(TrainingCancelled):
        embed(_paths(shapes_dir), backbone, cache_dir=None, should_stop=lambda: True)
