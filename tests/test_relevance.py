"""zennit LRP maps: conservation, BatchNorm canonizer, rule set, max-abs normalisation."""

import pytest
import torch
from torch import nn

from robex.lrp.relevance import LRPRule, RelevanceExplainer, max_abs_normalize, paper_rules
from robex.models.cifar_cnn import CifarCNN
from robex.models.normalize import Normalize


class _BiasFree(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.normalize = Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 5, bias=False))

    def forward(self, x):
        return self.classifier(self.features(self.normalize(x)))


def test_lrp0_conserves_the_explained_logit_on_a_bias_free_network():
    torch.manual_seed(0)
    model = _BiasFree().eval()
    images = torch.rand(5, 3, 16, 16)
    classes = torch.tensor([0, 1, 2, 3, 4])
    with RelevanceExplainer(model, LRPRule("lrp0", "lrp0")) as explain:
        relevance, logits = explain.raw(images, classes)
    explained_logit = model(images).gather(1, classes.view(-1, 1)).squeeze(1)
    torch.testing.assert_close(logits, model(images))
    torch.testing.assert_close(relevance.flatten(1).sum(1), explained_logit, rtol=1e-4, atol=1e-5)
    # the caller's model is untouched (no hooks, no merged BatchNorm, normalize still in place)
    assert isinstance(model.normalize, Normalize) and not model.features[0]._forward_hooks


def test_alpha1_gives_nonnegative_relevance_for_positive_logits():
    torch.manual_seed(1)
    model = _BiasFree().eval()
    images = torch.rand(4, 3, 16, 16)
    classes = model(images).argmax(1)
    with RelevanceExplainer(model, LRPRule("ab1", "alpha_beta", alpha=1.0)) as explain:
        relevance, logits = explain.raw(images, classes)
    positive = logits.gather(1, classes.view(-1, 1)).squeeze(1) > 0
    assert (relevance[positive] >= -1e-6).all()


def test_batchnorm_canonizer_keeps_the_function_and_all_rules_run():
    torch.manual_seed(2)
    model = CifarCNN(widths=(4, 8, 8), dropouts=(0.2, 0.3, 0.4)).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    images = torch.rand(3, 3, 32, 32)
    classes = torch.tensor([1, 4, 9])
    rules = paper_rules()
    assert [rule.name for rule in rules] == [
        "lrp0", "epsilon_0.0001", "epsilon_0.01", "epsilon_0.1", "epsilon_1", "alpha_beta_1", "alpha_beta_2"]
    for rule in rules:
        with RelevanceExplainer(model, rule) as explain:
            maps = explain(images, classes)
            _, logits = explain.raw(images, classes)
        torch.testing.assert_close(logits, model(images), rtol=1e-4, atol=1e-5)
        assert maps.shape == images.shape and torch.isfinite(maps).all()
        torch.testing.assert_close(maps.flatten(1).abs().amax(1), torch.ones(3))


def test_epsilon_absorbs_relevance_as_it_grows():
    torch.manual_seed(3)
    model = _BiasFree().eval()
    images = torch.rand(4, 3, 16, 16)
    classes = model(images).argmax(1)
    totals = []
    for epsilon in (1e-4, 1.0, 100.0):
        with RelevanceExplainer(model, LRPRule("e", "epsilon", epsilon=epsilon)) as explain:
            relevance, _ = explain.raw(images, classes)
        totals.append(relevance.flatten(1).sum(1).abs())
    assert (totals[0] >= totals[1]).all() and (totals[1] >= totals[2]).all()


def test_max_abs_normalize_and_bad_rules():
    maps = torch.tensor([[[-4.0, 2.0]], [[0.0, 0.0]]])
    torch.testing.assert_close(max_abs_normalize(maps), torch.tensor([[[-1.0, 0.5]], [[0.0, 0.0]]]))
    with pytest.raises(ValueError, match="alpha >= 1"):
        LRPRule("bad", "alpha_beta", alpha=0.5)
    with pytest.raises(ValueError, match="kind"):
        LRPRule("bad", "gamma")
