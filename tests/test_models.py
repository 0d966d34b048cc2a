import pytest
import torch
from torch import nn

from robex.data.hierarchy import cifar10_hierarchy
from robex.models.c2f import C2FClassifier
from robex.models.cifar_cnn import CifarCNN
from robex.models.double_mnist_cnn import DoubleMnistCNN
from robex.models.io import load_model, save_model
from robex.models.resnet import ResNet18Cifar
from robex.models.vgg import SmallVGG, load_local_state_dict
from robex.utils.errors import RobexError


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_double_mnist_cnn_is_the_thesis_network():
    model = DoubleMnistCNN()
    assert model(torch.rand(3, 1, 64, 64)).shape == (3, 10)
    assert _count(model) == 3818  # (8*9+8) + (16*8*9+16) + (256*10+10)
    kinds = {type(m) for m in model.net}
    assert kinds <= {nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Linear}


def test_wide_double_mnist_cnn_stays_verifiable():
    model = DoubleMnistCNN(channels=(16, 32, 64), pool=2, hidden=(128,))
    assert model(torch.rand(2, 1, 64, 64)).shape == (2, 10)
    assert {type(m) for m in model.net} <= {nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Linear}


def test_cifar_cnn_matches_table_2_parameter_counts():
    model = CifarCNN()
    weights = biases = 0
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            weights += module.weight.numel()
            biases += module.bias.numel()
        elif isinstance(module, nn.BatchNorm2d):  # the paper counts BN's scale and shift as weights
            weights += module.weight.numel() + module.bias.numel()
    assert (weights, biases) == (307_936, 458)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert isinstance(model.get_submodule("features.block3.3"), nn.Conv2d)


def test_c2f_classifier_predicts_coarse_then_fine():
    torch.manual_seed(0)
    model = C2FClassifier(cifar10_hierarchy(), lambda n: SmallVGG(n, widths=(4, 4, 4, 4, 4), hidden=8)).eval()
    x = torch.rand(6, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (6, 10)
    assert torch.allclose(logits.exp().sum(1), torch.ones(6), atol=1e-5)  # joint log-probabilities
    coarse, fine = model.predict(x)
    assert torch.equal(model.hierarchy.coarse_of(fine), coarse)
    assert torch.equal(coarse, model.coarse_logits(x).argmax(1))


def test_resnet18_cifar_shapes():
    model = ResNet18Cifar(base_width=8)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert isinstance(model.get_submodule("net.layer4"), nn.Sequential)


def test_save_and_load_model_roundtrip(tmp_path):
    config = {"_target_": "robex.models.double_mnist_cnn.DoubleMnistCNN", "channels": [8, 16]}
    model = DoubleMnistCNN()
    save_model(model, tmp_path / "model.pt", config)
    loaded = load_model(tmp_path / "model.pt")
    x = torch.rand(2, 1, 64, 64)
    assert torch.equal(loaded(x), model.eval()(x))


def test_corrupt_model_file_gives_clear_error(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RobexError, match="corrupt"):
        load_model(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_local_pretrained_weights_skip_mismatched_heads(tmp_path):
    source = SmallVGG(10, widths=(4, 4, 4, 4, 4), hidden=8)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    target = SmallVGG(3, widths=(4, 4, 4, 4, 4), hidden=8)
    load_local_state_dict(target, tmp_path / "w.pth")
    assert torch.equal(target.features[0].weight, source.features[0].weight)
    assert target.classifier[-1].out_features == 3
