"""Where the model looked: class activation maps, Grad-CAM, and the heat map drawn over the image.

Every Classifier ends in global average pooling and a linear head, so for class c
    logit_c = b_c + mean_xy sum_k W_ck A_k(x, y)
where A are the last feature maps (what the pooling layer receives). The map sum_k W_ck A_k(x, y)
is therefore exact, not an approximation: its mean over positions is the logit less the bias (CAM,
Zhou et al. 2016). It needs only the maps of the forward pass that predicted, which a hook keeps.
Grad-CAM (Selvaraju et al. 2017) weights the same maps by the mean gradient of the logit instead;
it is what fine-tuned models use, and it stays right for a tail that is not linear after the
pooling (ConvNeXt's LayerNorm). Its backward pass runs through the pooling and the head only,
from the kept maps, so it costs no second pass through the network either. On a linear tail the
two give the same map (the gradient of the logit on A_k(x, y) is W_ck / (h w)); a test holds them
to that.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

# Colour ramp for the heat (blue -> cyan -> yellow -> red, the one radiology viewers use), as
# (position, RGB) anchors interpolated linearly.
_RAMP = np.array([[0.0, 0, 0, 160], [0.3, 0, 160, 255], [0.6, 255, 230, 0], [1.0, 220, 0, 0]], dtype=np.float32)
HEAT_OPACITY = 0.6  # at the hottest point; cool parts stay transparent, so the image shows through
OUTSIDE_CROP_DIM = 0.35  # the margins the centre crop cut off are shown darkened


def _tail(model) -> tuple[nn.Module, list[nn.Module]]:
    """The final stage's pooling layer and the modules after it (before the head)."""
    final = list(model.body[-1].children()) if isinstance(model.body[-1], nn.Sequential) else [model.body[-1]]
    for i, module in enumerate(final):
        if isinstance(module, nn.AdaptiveAvgPool2d) or type(module).__name__ == "SelectAdaptivePool2d":
            return module, final[i + 1:]
    raise ValueError("This model has no global pooling layer to explain")


def cam_is_exact(model) -> bool:
    """True when only flattening lies between the pooling and the linear head."""
    pool, after = _tail(model)
    return getattr(pool, "pool_type", "avg") == "avg" and all(isinstance(m, (nn.Flatten, nn.Identity)) for m in after)


def method_for(model, finetuned: bool) -> str:
    """CAM for a first-stage (linear head on frozen features) model; Grad-CAM for a fine-tuned one,
    or wherever CAM would not be exact."""
    return "cam" if cam_is_exact(model) and not finetuned else "gradcam"


class last_feature_maps:
    """Keeps the maps entering the final pooling on every forward pass made inside it:
    `with last_feature_maps(model) as seen: model.predict_proba(x)` (two passes with a mirror)."""

    def __init__(self, model):
        self.model, self.seen = model, []

    def __enter__(self) -> list:
        pool, _ = _tail(self.model)
        self.handle = pool.register_forward_pre_hook(lambda _m, args: self.seen.append(args[0].detach().float()))
        return self.seen

    def __exit__(self, *exc) -> None:
        self.handle.remove()


@dataclass
class Evidence:
    """One image's last feature maps as its prediction saw them: [views, channels, h, w], where a
    second view is the mirror image (models that average with their mirror)."""

    maps: torch.Tensor

    @classmethod
    def per_image(cls, seen: list[torch.Tensor]) -> list["Evidence"]:
        views = torch.stack([m.cpu() for m in seen], dim=1)  # [N, views, C, h, w]
        return [cls(v.clone()) for v in views]


def class_map(model, evidence: Evidence, class_index: int, method: str = "cam") -> np.ndarray:
    """The heat map [h, w] for one class, in [0, 1] (all zeros: nothing in the image speaks for it)."""
    raw = _cam(model, evidence.maps, class_index) if method == "cam" else _grad_cam(model, evidence.maps, class_index)
    if raw.shape[0] == 2:  # the mirror view's map, mirrored back, averaged with the image's own
        raw = (raw[0] + torch.flip(raw[1], dims=[-1])) / 2
    else:
        raw = raw[0]
    heat = raw.clamp_min(0)
    peak = float(heat.max())
    return (heat / peak if peak > 0 else heat).numpy().astype(np.float32)


def _cam(model, maps: torch.Tensor, class_index: int) -> torch.Tensor:
    # numpy, not torch: a 1280 x 49 product is too small to share out, and torch's thread pool
    # costs ~14 ms to wake on a busy 2-core machine (measured; 0.05 ms on one thread).
    weights = model.head.weight[class_index].detach().float().cpu().numpy()
    return torch.from_numpy(np.einsum("k,vkhw->vhw", weights, maps.numpy()))


def _grad_cam(model, maps: torch.Tensor, class_index: int) -> torch.Tensor:
    pool, after = _tail(model)
    device = model.head.weight.device  # evidence is kept on the CPU; the model may be on a GPU
    with torch.inference_mode(False), torch.enable_grad():
        leaf = maps.to(device).clone().requires_grad_(True)  # a normal tensor, even from inference mode
        x = pool(leaf)
        for module in after:
            x = module(x)
        logits = model.head(x.flatten(1))
        (grad,) = torch.autograd.grad(logits[:, class_index].sum(), leaf)
    weights = grad.mean(dim=(2, 3), keepdim=True)  # [views, C, 1, 1]
    return (weights * leaf.detach()).sum(1).cpu()


# --- drawing ----------------------------------------------------------------------------------

def crop_box(size: tuple[int, int], preprocessing: dict) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """The image size after the model's resize (shorter side to `resize`) and the centre-crop box
    in it, with torchvision's own rounding, so the heat lands on the pixels the model saw."""
    width, height = size
    short, side = min(width, height), preprocessing["resize"]
    new_w, new_h = (side, int(side * height / width)) if width == short else (int(side * width / height), side)
    crop = preprocessing["crop"]
    top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
    return (new_w, new_h), (left, top, left + crop, top + crop)


def overlay(image: Image.Image, heat: np.ndarray, preprocessing: dict) -> Image.Image:
    """The image at the size the model resized it to, with the heat map over the centre crop (the
    square the model actually saw); the margins the crop cut off are darkened, not coloured,
    because the model never saw them."""
    size, box = crop_box(image.size, preprocessing)
    resized = np.asarray(image.convert("RGB").resize(size, Image.BICUBIC), dtype=np.float32)
    out = resized * OUTSIDE_CROP_DIM
    left, top, right, bottom = box  # inside the resized image: `resize` is larger than `crop`
    fine = _upsample(heat, bottom - top, right - left)
    alpha = (HEAT_OPACITY * fine)[..., None]
    out[top:bottom, left:right] = resized[top:bottom, left:right] * (1 - alpha) + colour_ramp(fine) * alpha
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def _upsample(heat: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear, with cell centres on patch centres (torch's align_corners=False): each feature cell
    sits over the patch of the crop it summarises. Two small matrix products in numpy."""
    return np.clip(_bilinear_matrix(height, heat.shape[0]) @ heat @ _bilinear_matrix(width, heat.shape[1]).T, 0, 1)


def _bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    src = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)
    low = np.floor(src).astype(int)
    high = np.minimum(low + 1, in_size - 1)
    matrix = np.zeros((out_size, in_size), np.float32)
    np.add.at(matrix, (np.arange(out_size), low), 1 - (src - low))
    np.add.at(matrix, (np.arange(out_size), high), src - low)
    return matrix


def colour_ramp(values: np.ndarray) -> np.ndarray:
    """[h, w] in [0, 1] -> [h, w, 3] RGB floats on the heat ramp."""
    return np.stack([np.interp(values, _RAMP[:, 0], _RAMP[:, c]) for c in (1, 2, 3)], axis=-1)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # zlib level 1: a third of the default's encoding time (8 vs 25 ms at 256 px) for ~6% more bytes.
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()
