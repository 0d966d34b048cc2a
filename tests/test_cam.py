"""CAM baselines: pytorch-grad-cam wrappers and the hand-written SmoothGrad-CAM++."""

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from robex.explain.cam import CAM_METHODS, LibraryCam, SmoothGradCamPlusPlus, build_cam
from robex.explain.layers import CAM_LAYERS, gradient_spatial_spread
from robex.models.cifar_cnn import CifarCNN
from robex.models.imagenet_zoo import ImageNetClassifier
from robex.models.resnet import ResNet18Cifar
from robex.utils.errors import RobexError

REPO = Path(__file__).resolve().parents[1]
LAYER = CAM_LAYERS["cifar_cnn"]  # features.block3.5: the ReLU after the last Conv-BN
# the map that feeds global average pooling directly: pytorch-grad-cam's usual choice
GAP_INPUT = {"resnet50": "net.layer4", "densenet121": "net.features", "convnext_tiny": "net.features.7", "resnet18_cifar": "net.layer4"}
POST_RELU = ("alexnet", "resnet50", "cifar_cnn", "resnet18_cifar")


def backbone(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if name == "cifar_cnn":
        return CifarCNN().eval(), torch.rand(2, 3, 32, 32)
    if name == "resnet18_cifar":
        return ResNet18Cifar(base_width=8).eval(), torch.rand(2, 3, 32, 32)
    model = ImageNetClassifier(name, weights=None).eval()
    for module in model.modules():  # ConvNeXt's layer scale starts at 1e-6, which hides every block's effect
        if hasattr(module, "layer_scale"):
            module.layer_scale.data.fill_(1.0)
    return model, torch.rand(2, 3, 96 if name == "alexnet" else 64, 96 if name == "alexnet" else 64)


@pytest.mark.parametrize("name", sorted(CAM_LAYERS))
def test_cam_layer_rule_spatial_gradient_and_activation(name):
    model, images = backbone(name)
    spread = gradient_spatial_spread(model, CAM_LAYERS[name], images)
    assert torch.all(spread > 1e-6), f"{name}: the gradient at {CAM_LAYERS[name]} is spatially constant"
    if name in GAP_INPUT:
        # why not the GAP input: there the gradient is w_c / HW everywhere, so HiRes-CAM == Grad-CAM
        assert torch.all(gradient_spatial_spread(model, GAP_INPUT[name], images) == 0)
    if name in POST_RELU:
        captured = []
        handle = model.get_submodule(CAM_LAYERS[name]).register_forward_hook(lambda _m, _i, out: captured.append(out))
        with torch.no_grad():
            model(images)
        handle.remove()
        assert captured[0].min() >= 0 and captured[0].dim() == 4


def test_presets_use_the_rule_layers():
    cifar = OmegaConf.load(REPO / "conf/explain/cifar10.yaml")
    imagenet = OmegaConf.load(REPO / "conf/explain/imagenet.yaml")
    for name, spec in {**cifar.backbones, **imagenet.backbones}.items():
        assert spec.cam_layer == CAM_LAYERS[name], name


def trained_tiny(model: torch.nn.Module, seed: int = 0):
    """``model`` trained for a few seconds on images whose class is a bright square's position."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(240) % 4
    images = torch.rand(240, 3, 32, 32, generator=generator) * 0.5
    for c in range(4):
        row, col = divmod(c, 2)
        images[labels == c, :, row * 16 + 4 : row * 16 + 12, col * 16 + 4 : col * 16 + 12] += 0.5
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for step in range(60):
        batch = slice((step * 60) % 240, (step * 60) % 240 + 60)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
        optimizer.step()
    model.eval()
    images, labels = images[:8].clamp(0, 1), labels[:8]
    with torch.no_grad():
        assert (model(images).argmax(1) == labels).float().mean() >= 0.75  # it did learn the task
    return model, images, labels


def six_maps(model, layer, images, labels):
    np.random.seed(0)
    return {m: build_cam(model, layer, m, smoothgrad_samples=4, smoothgrad_noise=0.15)(images, labels) for m in CAM_METHODS}


def largest_difference(maps, first, second):
    return (maps[first] - maps[second]).abs().flatten(1).amax(1).median()


def test_the_six_methods_give_pairwise_different_maps_on_trained_models():
    torch.manual_seed(0)
    resnet, images, labels = trained_tiny(ResNet18Cifar(num_classes=4, base_width=4, blocks=(1, 1, 1, 2)))
    maps = six_maps(resnet, CAM_LAYERS["resnet18_cifar"], images, labels)
    for first, second in itertools.combinations(CAM_METHODS, 2):
        assert largest_difference(maps, first, second) > 1e-2, (first, second)
    # the Table-2 CNN: after its CAM layer come only max-pool and one dense layer, so the class score
    # is piecewise linear there and SmoothGrad's noise changes the gradient only where it flips a
    # max-pool switch: SmoothGrad-CAM++ differs from Grad-CAM++, but little (documented)
    torch.manual_seed(0)
    cnn, images, labels = trained_tiny(CifarCNN(widths=(4, 8, 8), dropouts=(0.0, 0.0, 0.0), num_classes=4))
    maps = six_maps(cnn, LAYER, images, labels)
    for first, second in itertools.combinations(CAM_METHODS, 2):
        if {first, second} != {"grad_cam_plusplus", "smoothgrad_cam_plusplus"}:
            assert largest_difference(maps, first, second) > 1e-2, (first, second)
    assert largest_difference(maps, "grad_cam_plusplus", "smoothgrad_cam_plusplus") > 0
    # at the GAP input of a ResNet the gradient is constant, and two of the methods coincide
    resnet = ResNet18Cifar(base_width=8).eval()
    grad_cam, hires = (LibraryCam(resnet, "net.layer4", m)(images, labels) for m in ("grad_cam", "hires_cam"))
    torch.testing.assert_close(grad_cam, hires, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CifarCNN(widths=(4, 8, 8), dropouts=(0.0, 0.0, 0.0), image_size=16).eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", CAM_METHODS)
def test_every_cam_gives_unit_range_maps_of_image_size(model, images, method):
    np.random.seed(0)
    maps = build_cam(model, LAYER, method, smoothgrad_samples=2)(images, torch.tensor([0, 1, 2]))
    assert maps.shape == (3, 16, 16) and maps.dtype == torch.float32
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    assert not torch.isnan(maps).any()


def test_wrapper_matches_library_and_a_hand_computed_grad_cam(model, images):
    classes = torch.tensor([2, 0, 1])
    ours = LibraryCam(model, LAYER, "grad_cam")(images, classes)
    library = GradCAM(model=model, target_layers=[model.features.block3[5]])
    direct = library(input_tensor=images, targets=[ClassifierOutputTarget(c) for c in classes.tolist()])
    torch.testing.assert_close(ours, torch.from_numpy(direct))
    # Grad-CAM by hand: ReLU(sum_k mean(dY/dA_k) A_k), min-max, bilinear upsampling
    captured = []
    handle = model.features.block3[5].register_forward_hook(lambda _m, _i, out: captured.append(out))
    logits = model(images)
    handle.remove()
    (gradient,) = torch.autograd.grad(logits.gather(1, classes.view(-1, 1)).sum(), captured[0])
    cam = torch.relu((gradient.mean(dim=(2, 3), keepdim=True) * captured[0]).sum(1, keepdim=True)).detach()
    from robex.explain.cam import finish_cam

    torch.testing.assert_close(finish_cam(cam, (16, 16)), ours, atol=1e-5, rtol=1e-4)


def test_smoothgrad_cam_plusplus_without_noise_equals_library_grad_cam_plusplus(model, images):
    classes = torch.tensor([1, 1, 0])
    ours = SmoothGradCamPlusPlus(model, LAYER, samples=1, noise_level=0.0)(images, classes)
    library = GradCAMPlusPlus(model=model, target_layers=[model.features.block3[5]])
    expected = library(input_tensor=images, targets=[ClassifierOutputTarget(c) for c in classes.tolist()])
    torch.testing.assert_close(ours, torch.from_numpy(expected), atol=1e-5, rtol=1e-4)
    noisy = SmoothGradCamPlusPlus(model, LAYER, samples=3, noise_level=0.2, seed=1)
    again = SmoothGradCamPlusPlus(model, LAYER, samples=3, noise_level=0.2, seed=1)
    torch.testing.assert_close(noisy(images, classes), again(images, classes))


def test_unknown_method_or_layer_is_a_clear_error(model):
    with pytest.raises(ValueError, match="not one of"):
        build_cam(model, LAYER, "score_cam")
    with pytest.raises(RobexError, match=r"layer 'features\.block9' is not a module of CifarCNN"):
        build_cam(model, "features.block9", "grad_cam")
    with pytest.raises(RobexError, match="not a module"):
        SmoothGradCamPlusPlus(model, "features.block3.5.weight")
