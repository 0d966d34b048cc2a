"""Addressing a model's inner layer by its dotted module name (a config value per backbone)."""

from __future__ import annotations

import torch
from torch import nn

from robex.utils.errors import RobexError


def unknown_layer(model: nn.Module, name: str) -> RobexError:
    """The one-sentence error for a layer name (a config value) that ``model.get_submodule`` rejects."""
    candidates = [n for n, _ in model.named_modules() if n][-8:]
    return RobexError(
        f"layer {name!r} is not a module of {type(model).__name__}; use a dotted name from model.named_modules(), "
        f"e.g. one of {candidates}"
    )


class _StopForward(Exception):
    """Raised by the hook once the wanted layer ran, so the rest of the network is skipped."""


class FeatureExtractor:
    """Deep features F(x) at ``layer``: the output of a named module, or the model output if None.

    For an inner layer the forward pass stops right after that layer: LOTS at the penultimate
    features (Rozsa et al. 2017) does not pay for the classifier head.
    """

    def __init__(self, model: nn.Module, layer: str | None = None) -> None:
        self.model = model
        self.layer = layer
        try:
            self.module = model.get_submodule(layer) if layer else None
        except AttributeError as error:
            raise unknown_layer(model, layer) from error

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.module is None:
            return self.model(images)
        captured: list[torch.Tensor] = []

        def keep_and_stop(_module, _inputs, output):
            captured.append(output)
            raise _StopForward

        handle = self.module.register_forward_hook(keep_and_stop)
        try:
            self.model(images)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise ValueError(f"layer {self.layer!r} never ran in the forward pass; choose a layer the model uses")
        return captured[0]


# The CAM layer of every backbone, by one rule (docs/explain.md, "CAM layers"): the last spatial
# feature map before the classifier head, after its activation, whose gradient w.r.t. a class
# score is spatially resolved. The map that feeds global average pooling + linear directly (ResNet
# layer4, DenseNet features, ConvNeXt features.7, pytorch-grad-cam's usual choice) has a gradient
# that is the same at every position (dy_c/dA_kij = w_ck / HW), which makes HiRes-CAM equal to
# Grad-CAM and SmoothGrad-CAM++ equal to Grad-CAM++ exactly (Draelos & Carin 2020, Sect. 3), so the
# rows of thesis Table 5.2 could not differ there. Hooks on torchvision's bn3/bn2 of the last
# block see a tensor that the residual add and ReLU later overwrite in place, so they are no option.
CAM_LAYERS = {
    # AlexNet: ReLU after the last conv (features.10), before max-pool and the 6x6 pooling
    "alexnet": "net.features.11",
    # ResNet-50: output of the penultimate bottleneck (after its ReLU); the last one feeds GAP
    "resnet50": "net.layer4.1",
    # DenseNet-121: last dense block, before norm5 + functional ReLU + GAP (no activation module there)
    "densenet121": "net.features.denseblock4",
    # ConvNeXt-T: penultimate block of stage 4 (ConvNeXt blocks end without an activation)
    "convnext_tiny": "net.features.7.1",
    # the Table-2 CNN (Dieter & Zisgen 2023): ReLU after the last Conv-BN, before max-pool + dense
    "cifar_cnn": "features.block3.5",
    # ResNet-18 (CIFAR): output of the penultimate basic block (after its ReLU)
    "resnet18_cifar": "net.layer4.0",
}


def gradient_spatial_spread(model: nn.Module, layer: str, images: torch.Tensor, class_index: int = 0) -> torch.Tensor:
    """Per image, the largest over channels of max - min over positions of d logit_c / d A at ``layer``.

    Zero means the gradient is spatially constant there (Grad-CAM == HiRes-CAM at that layer)."""
    try:
        module = model.get_submodule(layer)
    except AttributeError as error:
        raise unknown_layer(model, layer) from error
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, output: captured.append(output))
    try:
        with torch.enable_grad():
            logits = model(images)
            (gradient,) = torch.autograd.grad(logits[:, class_index].sum(), captured[0])
    finally:
        handle.remove()
    flat = gradient.flatten(2)
    return (flat.amax(dim=2) - flat.amin(dim=2)).amax(dim=1)
