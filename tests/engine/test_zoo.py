import numpy as np
import pytest
import torch

from transferapp.engine import zoo


def test_unknown_base_lists_the_valid_names():
    with pytest.raises(ValueError) as err:
        zoo.get_base("vgg99")
    assert "efficientnet_lite0" in str(err.value) and "resnet18" in str(err.value)
    with pytest.raises(ValueError):
        zoo.create_backbone("vgg99")


def test_missing_torchvision_weights_explain_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache, no download
    with pytest.raises(zoo.WeightsUnavailable) as err:
        zoo.create_backbone("resnet18")
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message
    assert str(tmp_path / "checkpoints") in message
    assert "python manage.py fetch_weights resnet18" in message
    assert not zoo.get_base("resnet18").weights_available


def test_bundled_base_is_available_offline_and_gives_pooled_features():
    info = {b.name: b for b in zoo.list_bases()}
    assert info["efficientnet_lite0"].bundled and info["efficientnet_lite0"].weights_available
    backbone = zoo.create_backbone("efficientnet_lite0", image_size=64)
    assert backbone.preprocessing["crop"] == 64 and backbone.preprocessing["mean"] == [0.5] * 3
    with torch.inference_mode():
        out = backbone.model.eval()(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, backbone.feature_dim) == (2, 1280)
    assert backbone.top_start(2) == len(backbone.model) - 3


def test_torchvision_architectures_split_into_stages_without_weights():
    for name in ("resnet18", "mobilenet_v3_large"):
        backbone = zoo.create_backbone(name, image_size=64, pretrained=False)
        with torch.inference_mode():
            assert backbone.model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, backbone.feature_dim)


def test_onnx_runtime_runs_the_frozen_body_with_the_same_numbers():
    """The CPU fast path for frozen stages must not change what the network computes."""
    from transferapp.engine.zoo import _onnx_session
    backbone = zoo.create_backbone("efficientnet_lite0", image_size=96)
    frozen = backbone.model[:backbone.top_start(3)].eval()
    session = _onnx_session(frozen, (3, 96, 96))
    assert session is not None
    x = torch.randn(5, 3, 96, 96)  # another batch size than the exported one: the batch axis is dynamic
    with torch.inference_mode():
        expected = frozen(x).numpy()
    got = session.run(None, {"x": x.numpy()})[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=1e-3)
    assert not frozen.training and not any(m.training for m in frozen.modules())


def test_frozen_runner_uses_eager_pytorch_for_a_few_images():
    from transferapp.engine.zoo import frozen_runner
    backbone = zoo.create_backbone("efficientnet_lite0", image_size=64)
    run = frozen_runner(backbone.model, torch.device("cpu"), (3, 64, 64), n_images=3)
    assert run.__name__ == "eager"
    with torch.inference_mode():
        assert run(torch.randn(2, 3, 64, 64)).shape == (2, backbone.feature_dim)
