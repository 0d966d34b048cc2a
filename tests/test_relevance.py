"""The LRP front-end (robex.lrp.attribution) against hand computations.

Covers conservation, the BatchNorm treatments (merge vs paper 001's BN layer rule), the z+ bias
convention, the initial relevance and the two call forms.
"""

import pytest
import torch
from torch import nn

from robex.lrp.attribution import (
    LRPAttribution,
    LRPRule,
    fold_batch_norm,
    max_abs_normalize,
    paper_rules,
    relevance,
    zplus_zbox_rule,
)
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


def _dense_bn_net(seed: int) -> nn.Sequential:
    """Linear(4,6) -> BN(6) -> ReLU -> Linear(6,3), biases and BN statistics far from identity."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    bn = net[1]
    bn.running_mean.uniform_(-1.0, 1.0)
    bn.running_var.uniform_(0.3, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-1.0, 1.0)
    net[0].bias.data.uniform_(-0.5, 0.5)
    net[3].bias.data.uniform_(-0.5, 0.5)
    return net.eval()


def _zplus_by_hand(inputs, weight, bias, upper, include_bias):
    """z+ rule with the loops written out: R_i = sum_j (x_i w_ji)^+ / (sum_i (x_i w_ji)^+ [+ b_j^+]) R_j.

    ``inputs`` are >= 0 (pixels in [0, 1] or ReLU outputs), as in the paper's setting.
    """
    out = torch.zeros_like(inputs)
    for n in range(inputs.shape[0]):
        for j in range(weight.shape[0]):
            contributions = (inputs[n] * weight[j]).clamp(min=0)
            denominator = contributions.sum() + (bias[j].clamp(min=0) if include_bias else 0.0)
            if denominator > 0:
                out[n] += contributions / denominator * upper[n, j]
    return out


def _bn_layer_by_hand(pre, bn, upper, epsilon):
    """Paper 001's backprop_batchNorm: x = a * gamma / sqrt(var + eps_bn), y = x + shift, R = x R / (y + eps)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    x = pre * scale
    y = x + bn.bias - bn.running_mean * scale
    return x * upper / (y + epsilon)


@torch.no_grad()
def _hand_lrp_dense_bn(net, inputs, classes, batchnorm, include_bias=True):
    first, bn, last = net[0], net[1], net[3]
    pre = first(inputs)
    hidden = torch.relu(bn(pre))
    upper = nn.functional.one_hot(classes, 3).double()
    relevance_hidden = _zplus_by_hand(hidden.double(), last.weight.double(), last.bias.double(), upper, include_bias)
    if batchnorm == "layer":
        relevance_pre = _bn_layer_by_hand(pre.double(), bn, relevance_hidden, 1e-7)
        return _zplus_by_hand(inputs.double(), first.weight.double(), first.bias.double(), relevance_pre, include_bias)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = first.weight * scale[:, None]
    bias = (first.bias - bn.running_mean) * scale + bn.bias
    return _zplus_by_hand(inputs.double(), weight.double(), bias.double(), relevance_hidden, include_bias)


@pytest.mark.parametrize("batchnorm", ["merge", "layer"])
def test_alpha1_matches_a_hand_computation_with_a_batchnorm_layer(batchnorm):
    net = _dense_bn_net(0)
    inputs = torch.rand(8, 4)
    classes = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    rule = LRPRule("alpha_beta_1", "alpha_beta", alpha=1.0, stabilizer=1e-12)
    ours = relevance(net, inputs, classes, rule=rule, batchnorm=batchnorm)
    expected = _hand_lrp_dense_bn(net, inputs, classes, batchnorm)
    torch.testing.assert_close(ours.double(), expected, rtol=1e-4, atol=1e-6)


def test_bn_layer_rule_gives_negative_alpha1_relevance_merge_never_does():
    # paper 001 Table 4 has alpha = 1 scores below 0; z+ after folding BN cannot produce them
    net = _dense_bn_net(1)
    inputs = torch.rand(64, 4)
    classes = net(inputs).argmax(1)
    rule = LRPRule("alpha_beta_1", "alpha_beta", alpha=1.0)
    merged = relevance(net, inputs, classes, rule=rule, batchnorm="merge")
    layered = relevance(net, inputs, classes, rule=rule, batchnorm="layer")
    assert (merged >= -1e-7).all()
    assert (layered < -1e-4).any()


@pytest.mark.parametrize("include_bias", [True, False])
def test_zplus_bias_convention_matches_hand_computation_and_exclude_conserves(include_bias):
    net = _dense_bn_net(2)
    net[1] = nn.Identity()  # no BN: isolate the bias convention
    inputs = torch.rand(6, 4)
    classes = torch.tensor([0, 1, 2, 2, 1, 0])
    rule = LRPRule("zplus", "zplus", stabilizer=1e-12)
    zplus_bias = "include" if include_bias else "exclude"
    ours = relevance(net, inputs, classes, rule=rule, zplus_bias=zplus_bias)
    with torch.no_grad():
        hidden = torch.relu(net[0](inputs))
        upper = nn.functional.one_hot(classes, 3).double()
        r_hidden = _zplus_by_hand(hidden.double(), net[3].weight.double(), net[3].bias.double(), upper, include_bias)
        expected = _zplus_by_hand(inputs.double(), net[0].weight.double(), net[0].bias.double(), r_hidden, include_bias)
    torch.testing.assert_close(ours.double(), expected, rtol=1e-4, atol=1e-6)
    totals = ours.sum(1)
    if include_bias:
        assert (totals < 1 - 1e-3).any()  # positive biases absorb relevance
    else:
        # paper 002 eq. 4 as written: a one-hot start is conserved exactly (where any unit is active)
        torch.testing.assert_close(totals, torch.ones_like(totals), rtol=1e-5, atol=1e-5)


def test_paper002_rules_with_bias_excluded_sum_to_one_whatever_the_input():
    torch.manual_seed(4)
    model = CifarCNN(widths=(4, 8, 8), dropouts=(0.2, 0.3, 0.4)).eval()
    images = torch.rand(4, 3, 32, 32)
    classes = torch.tensor([1, 4, 9, 0])
    exclude = relevance(model, images, classes, rule=zplus_zbox_rule(), zplus_bias="exclude")
    include = relevance(model, images, classes, rule=zplus_zbox_rule(), zplus_bias="include")
    torch.testing.assert_close(exclude.flatten(1).sum(1), torch.ones(4), rtol=1e-3, atol=1e-3)
    assert not torch.allclose(include.flatten(1).sum(1), torch.ones(4), atol=1e-2)


def test_lrp0_conserves_the_explained_logit_on_a_bias_free_network():
    torch.manual_seed(0)
    model = _BiasFree().eval()
    images = torch.rand(5, 3, 16, 16)
    classes = torch.tensor([0, 1, 2, 3, 4])
    with LRPAttribution(model, LRPRule("lrp0", "lrp0"), relevance_init="logit") as explain:
        logits, maps = explain(images, classes)
    explained_logit = model(images).gather(1, classes.view(-1, 1)).squeeze(1)
    torch.testing.assert_close(logits, model(images))
    torch.testing.assert_close(maps.flatten(1).sum(1), explained_logit, rtol=1e-4, atol=1e-5)
    # the caller's model is untouched (no hooks, no merged BatchNorm, normalize still in place)
    assert isinstance(model.normalize, Normalize) and not model.features[0]._forward_hooks


def test_relevance_init_scales_the_one_hot_map_by_logit_or_softmax():
    torch.manual_seed(5)
    model = CifarCNN(widths=(4, 8, 8), dropouts=(0.2, 0.3, 0.4)).eval()
    images = torch.rand(3, 3, 32, 32)
    classes = torch.tensor([2, 5, 7])
    rule = LRPRule("e", "epsilon", epsilon=0.01)
    onehot = relevance(model, images, classes, rule=rule, batchnorm="layer")
    logits = model(images).detach()
    for init, scale in (("logit", logits), ("softmax", logits.softmax(1))):
        scaled = relevance(model, images, classes, rule=rule, batchnorm="layer", relevance_init=init)
        factor = scale.gather(1, classes.view(-1, 1)).view(-1, 1, 1, 1)
        torch.testing.assert_close(scaled, onehot * factor, rtol=1e-4, atol=1e-7)


def test_with_block_equals_per_call_and_create_graph_is_differentiable():
    torch.manual_seed(6)
    model = CifarCNN(widths=(4, 8, 8), dropouts=(0.2, 0.3, 0.4)).eval()
    images = torch.rand(2, 3, 32, 32)
    attribution = LRPAttribution(model, zplus_zbox_rule())
    per_call = attribution(images, lambda logits: logits.argmax(1))[1]
    with attribution:
        attached = attribution(images, lambda logits: logits.argmax(1))[1]
        attached_again = attribution(images, lambda logits: logits.argmax(1))[1]
    torch.testing.assert_close(attached, per_call)
    torch.testing.assert_close(attached_again, per_call)
    probe = images.clone().requires_grad_(True)
    _, heatmap = attribution(probe, torch.tensor([3, 3]), create_graph=True)
    (grad,) = torch.autograd.grad(heatmap.clamp(min=0).sum(), probe)
    assert torch.isfinite(grad).all() and grad.abs().amax() > 0
    with attribution, pytest.raises(ValueError, match="create_graph"):
        attribution(images, torch.tensor([3, 3]), create_graph=True)


def test_alpha1_gives_nonnegative_relevance_for_positive_logits():
    torch.manual_seed(1)
    model = _BiasFree().eval()
    images = torch.rand(4, 3, 16, 16)
    classes = model(images).argmax(1)
    logits = model(images).detach()
    maps = relevance(model, images, classes, rule=LRPRule("ab1", "alpha_beta", alpha=1.0), relevance_init="logit")
    positive = logits.gather(1, classes.view(-1, 1)).squeeze(1) > 0
    assert (maps[positive] >= -1e-6).all()


@pytest.mark.parametrize("batchnorm", ["merge", "layer"])
def test_batchnorm_treatments_keep_the_function_and_all_rules_run(batchnorm):
    torch.manual_seed(2)
    model = CifarCNN(widths=(4, 8, 8), dropouts=(0.2, 0.3, 0.4)).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    torch.testing.assert_close(fold_batch_norm(model)(torch.rand(2, 3, 32, 32) * 0 + 0.5), model(torch.full((2, 3, 32, 32), 0.5)))
    images = torch.rand(3, 3, 32, 32)
    classes = torch.tensor([1, 4, 9])
    rules = paper_rules()
    assert [rule.name for rule in rules] == [
        "lrp0", "epsilon_0.0001", "epsilon_0.01", "epsilon_0.1", "epsilon_1", "alpha_beta_1", "alpha_beta_2"]
    for rule in rules:
        with LRPAttribution(model, rule, batchnorm=batchnorm, relevance_init="logit") as explain:
            logits, raw = explain(images, classes)
        maps = max_abs_normalize(raw)
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
        maps = relevance(model, images, classes, rule=LRPRule("e", "epsilon", epsilon=epsilon), relevance_init="logit")
        totals.append(maps.flatten(1).sum(1).abs())
    assert (totals[0] >= totals[1]).all() and (totals[1] >= totals[2]).all()


def test_max_abs_normalize_and_bad_options():
    maps = torch.tensor([[[-4.0, 2.0]], [[0.0, 0.0]]])
    torch.testing.assert_close(max_abs_normalize(maps), torch.tensor([[[-1.0, 0.5]], [[0.0, 0.0]]]))
    with pytest.raises(ValueError, match="alpha >= 1"):
        LRPRule("bad", "alpha_beta", alpha=0.5)
    with pytest.raises(ValueError, match="kind"):
        LRPRule("bad", "gamma")
    with pytest.raises(ValueError, match="batchnorm"):
        LRPAttribution(_BiasFree(), batchnorm="fold")
    unfoldable = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, 2)).eval()
    with pytest.raises(ValueError, match="batchnorm='layer'"):
        LRPAttribution(unfoldable, batchnorm="merge")


def test_lrp0_is_the_same_for_both_batchnorm_treatments_epsilon_1_is_not():
    # LRP-0 through conv then BN (x / y) equals LRP-0 through the folded conv (both divide by y),
    # so only rules whose stabiliser or sign split sees the BN shift separate the treatments
    torch.manual_seed(7)
    model = CifarCNN(widths=(4, 8, 8), dropouts=(0.2, 0.3, 0.4)).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 2.0)
            module.bias.data.uniform_(0.0, 0.3)
    images = torch.rand(3, 3, 32, 32)
    classes = torch.tensor([0, 5, 8])
    lrp0 = LRPRule("lrp0", "lrp0")
    torch.testing.assert_close(relevance(model, images, classes, rule=lrp0, batchnorm="layer"),
                               relevance(model, images, classes, rule=lrp0, batchnorm="merge"), rtol=1e-3, atol=1e-6)
    eps1 = LRPRule("e1", "epsilon", epsilon=1.0)
    layered = relevance(model, images, classes, rule=eps1, batchnorm="layer")
    merged = relevance(model, images, classes, rule=eps1, batchnorm="merge")
    assert (layered - merged).abs().max() > 1e-2 * merged.abs().max()
