"""CAM baselines of thesis Table 5.2 at one named layer, explaining a given class per image.

Random-CAM, Grad-CAM, Grad-CAM++, Layer-CAM and HiRes-CAM come from pytorch-grad-cam
(``pytorch_grad_cam``); SmoothGrad-CAM++ (Omeiza et al. 2019) is not in that library and is
written here by hand in torch, following the library's Grad-CAM++ weights (its eq. 19) so that
with one noise-free sample it reproduces the library's Grad-CAM++ exactly.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F
from torch import nn

from robex.explain.layers import unknown_layer
from robex.explain.visualize import minmax_per_image

# class names in pytorch_grad_cam, imported on first use (the library takes seconds to import)
LIBRARY_CAMS = {
    "random_cam": "RandomCAM",
    "grad_cam": "GradCAM",
    "grad_cam_plusplus": "GradCAMPlusPlus",
    "layer_cam": "LayerCAM",
    "hires_cam": "HiResCAM",
}
CAM_METHODS = ("random_cam", "grad_cam", "grad_cam_plusplus", "smoothgrad_cam_plusplus", "layer_cam", "hires_cam")
# display names in the order of thesis Table 5.2 (oldest method first)
DISPLAY_NAMES = {
    "random_cam": "Random-CAM",
    "grad_cam": "Grad-CAM",
    "grad_cam_plusplus": "Grad-CAM++",
    "smoothgrad_cam_plusplus": "SmoothGrad-CAM++",
    "layer_cam": "Layer-CAM",
    "hires_cam": "HiRes-CAM",
    "lots": "LOTS",
    "lots_fast": "LOTS (fast rule)",
}


class LibraryCam:
    """A pytorch-grad-cam method as a batched map: (images (B,C,H,W), classes (B,)) -> (B,H,W) in [0, 1].

    The library's hooks live only for one call, so they never fire during other forward passes
    (metrics, LOTS) of the same model.
    """

    def __init__(self, model: nn.Module, layer: str, method: str) -> None:
        if method not in LIBRARY_CAMS:
            raise ValueError(f"CAM method {method!r} is not one of {sorted(LIBRARY_CAMS)}")
        self.model = model
        self.layer = layer
        try:
            self.module = model.get_submodule(layer)
        except AttributeError as error:
            raise unknown_layer(model, layer) from error
        self.method = method
        # imported here, not at call time, so the first timed call does not pay for it
        self.cam_class = getattr(importlib.import_module("pytorch_grad_cam"), LIBRARY_CAMS[method])

    def __call__(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = self.cam_class(model=self.model, target_layers=[self.module])
        try:
            # the library takes one target object per image
            targets = [ClassifierOutputTarget(int(c)) for c in classes.tolist()]
            with torch.enable_grad():
                maps = cam(input_tensor=images, targets=targets)
        finally:
            cam.activations_and_grads.release()
        return torch.from_numpy(maps).to(images.device)


class SmoothGradCamPlusPlus:
    """SmoothGrad-CAM++ (Omeiza et al. 2019): Grad-CAM++ weights from gradients averaged over noise.

    For ``samples`` copies x + N(0, (noise_level * (max x - min x))^2) (SmoothGrad's noise level,
    Smilkov et al. 2017), the gradients dY^c/dA and their 2nd/3rd powers are averaged; the
    Grad-CAM++ coefficients alpha = g^2 / (2 g^2 + sum(A) g^3) then weight ReLU(g) per channel,
    with A the activations of the clean image. Post-processing (ReLU, per-image min-max,
    bilinear upsampling, min-max) matches pytorch-grad-cam's.
    """

    def __init__(self, model: nn.Module, layer: str, samples: int = 4, noise_level: float = 0.15, seed: int = 0) -> None:
        if samples < 1 or noise_level < 0:
            raise ValueError(f"SmoothGrad-CAM++ needs samples >= 1 and noise_level >= 0 (got {samples}, {noise_level})")
        self.model = model
        try:
            self.module = model.get_submodule(layer)
        except AttributeError as error:
            raise unknown_layer(model, layer) from error
        self.samples = samples
        self.noise_level = noise_level
        self.generator = torch.Generator().manual_seed(seed)

    def _activation_and_gradient(self, images: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []
        handle = self.module.register_forward_hook(lambda _m, _i, output: captured.append(output))
        try:
            with torch.enable_grad():
                logits = self.model(images)
                score = logits.gather(1, classes.view(-1, 1)).sum()
                (gradient,) = torch.autograd.grad(score, captured[0])
        finally:
            handle.remove()
        return captured[0].detach(), gradient.detach()

    def __call__(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        classes = classes.to(images.device)
        activations, _ = self._activation_and_gradient(images, classes)
        spread = (images.flatten(1).amax(1) - images.flatten(1).amin(1)).view(-1, 1, 1, 1)
        sum_g = sum_g2 = sum_g3 = torch.zeros_like(activations)
        for _ in range(self.samples):  # a loop over noise draws, each one batched over images
            noise = torch.randn(images.shape, generator=self.generator).to(images.device)
            _, gradient = self._activation_and_gradient(images + noise * self.noise_level * spread, classes)
            sum_g, sum_g2, sum_g3 = sum_g + gradient, sum_g2 + gradient**2, sum_g3 + gradient**3
        g, g2, g3 = sum_g / self.samples, sum_g2 / self.samples, sum_g3 / self.samples
        sum_activations = activations.sum(dim=(2, 3), keepdim=True)
        alpha = g2 / (2 * g2 + sum_activations * g3 + 1e-6)
        alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
        weights = (F.relu(g) * alpha).sum(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * activations).sum(dim=1, keepdim=True))
        return finish_cam(cam, images.shape[-2:])


def finish_cam(cam: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """pytorch-grad-cam's scale_cam_image in torch: min-max (+1e-7), bilinear resize, min-max again."""
    flat = cam.flatten(1)
    flat = flat - flat.amin(dim=1, keepdim=True)
    flat = flat / (1e-7 + flat.amax(dim=1, keepdim=True))
    resized = F.interpolate(flat.view_as(cam), size=tuple(size), mode="bilinear", align_corners=False)
    return minmax_per_image(resized.clamp_min(0))[:, 0]


def build_cam(model: nn.Module, layer: str, method: str, smoothgrad_samples: int = 4, smoothgrad_noise: float = 0.15, seed: int = 0):
    """The CAM explainer called ``method`` (one of :data:`CAM_METHODS`) at ``layer``."""
    if method == "smoothgrad_cam_plusplus":
        return SmoothGradCamPlusPlus(model, layer, smoothgrad_samples, smoothgrad_noise, seed)
    if method in LIBRARY_CAMS:
        return LibraryCam(model, layer, method)
    raise ValueError(f"CAM method {method!r} is not one of {list(CAM_METHODS)}")
