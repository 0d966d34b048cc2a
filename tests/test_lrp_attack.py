"""Differentiable LRP and the LRPC/LRPF attacks (Algorithm 1, losses (7)/(9)) plus the C2F baselines.

Scientific properties: the bias convention of z+ against a hand computation with biased layers,
the degeneracy of the paper-literal setting (conservation makes loss (7) constant), the one-heatmap
identity behind the fast loss, and an attack that must beat its own ascent and random noise.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from robex.attacks.c2f import LRPC, LRPF, make_c2f_attack
from robex.attacks.evaluation import perturbation_share_on_top_relevance
from robex.attacks.lrp_attack import LRP, PAPER_LITERAL, LRPOptions, lrp_attack_loss, lrp_loss, top2_classes
from robex.data.hierarchy import Hierarchy
from robex.models.c2f import C2FClassifier
from robex.models.normalize import Normalize

HIERARCHY = Hierarchy(coarse_names=("warm", "cold"), fine_names=("red", "orange", "green", "blue"), fine_to_coarse=(0, 0, 1, 1))
COLOURS = torch.tensor([[0.35, 0.0, 0.0], [0.25, 0.15, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 0.35]])
WORKING = LRPOptions()  # rules=paper, zplus_bias=include, relevance_init=logit


def tiny_backbone(num_classes: int) -> nn.Module:
    return nn.Sequential(
        Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 4 * 4, 12), nn.ReLU(), nn.Linear(12, num_classes),
    )


def synthetic(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (count,), generator=generator)
    images = 0.3 + COLOURS[labels][:, :, None, None] + 0.1 * torch.randn(count, 3, 8, 8, generator=generator)
    return images.clamp(0, 1), labels


@pytest.fixture(scope="module")
def c2f() -> tuple[C2FClassifier, torch.Tensor, torch.Tensor]:
    """A C2F model trained in ~2 s on separable synthetic colours, and 32 correctly classified test images."""
    torch.manual_seed(0)
    model = C2FClassifier(HIERARCHY, tiny_backbone)
    images, labels = synthetic(512, seed=1)
    coarse = HIERARCHY.coarse_of(labels)
    local = HIERARCHY.local_index(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(120):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model.coarse_logits(images), coarse)
        for c in range(2):
            rows = coarse == c
            loss = loss + nn.functional.cross_entropy(model.fine_logits(images[rows], c), local[rows])
        loss.backward()
        optimizer.step()
    model.eval()
    test_images, test_labels = synthetic(96, seed=2)
    coarse_pred, fine_pred = model.predict(test_images)
    correct = (coarse_pred == HIERARCHY.coarse_of(test_labels)) & (fine_pred == test_labels)
    assert correct.float().mean() > 0.85
    return model, test_images[correct][:32], test_labels[correct][:32]


def _double_head(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    head = tiny_backbone(3).double().eval()
    for module in head.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return head


# ------------------------------------------------------------------ LRP rules against hand computations


def _biased_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double().eval()
    with torch.no_grad():  # mostly positive weights, a few negative: every unit fires, ZBox's h-term is used
        net[0].weight.copy_(torch.randn(5, 6, dtype=torch.double) * 0.5 + 0.6)
        net[2].weight.copy_(torch.randn(3, 5, dtype=torch.double) * 0.5 + 0.6)
        net[0].bias.copy_(torch.tensor([0.4, -0.3, 0.2, 0.5, -0.1], dtype=torch.double))
        net[2].bias.copy_(torch.tensor([0.7, -0.5, 0.3], dtype=torch.double))
    return net


def _hand_lrp(net: nn.Sequential, x: torch.Tensor, classes: torch.Tensor, bias: bool) -> torch.Tensor:
    """Eq. (3) delta start, eq. (4) z+ on the top layer (with b+ in the denominator if ``bias``),
    eq. (5) z-beta with bounds [0, 1] at the input (its bias terms cancel: b - b+ - b- = 0)."""
    first, second = net[0].weight, net[2].weight
    hidden = torch.relu(x @ first.T + net[0].bias)
    start = nn.functional.one_hot(classes, 3).double()
    positive = second.clamp(min=0)
    denominator = hidden @ positive.T + (net[2].bias.clamp(min=0) if bias else 0)
    relevance_hidden = hidden * ((start / denominator) @ positive)
    low, high = torch.zeros(6, dtype=torch.double), torch.ones(6, dtype=torch.double)
    denominator = x @ first.T - low @ first.clamp(min=0).T - high @ first.clamp(max=0).T
    share = relevance_hidden / denominator
    return x * (share @ first) - low * (share @ first.clamp(min=0)) - high * (share @ first.clamp(max=0))


@pytest.mark.parametrize("zplus_bias", ["include", "exclude"])
def test_zplus_bias_convention_matches_hand_computation_with_biased_layers(zplus_bias):
    net = _biased_net()
    x = torch.rand(4, 6, dtype=torch.double, generator=torch.Generator().manual_seed(3))
    classes = torch.tensor([0, 1, 2, 1])
    options = LRPOptions(zplus_bias=zplus_bias, relevance_init="onehot", stabilizer=1e-12)
    _, heatmap = LRP(net, options)(x, classes)
    expected = _hand_lrp(net, x, classes, bias=zplus_bias == "include")
    assert torch.allclose(heatmap, expected, atol=1e-10)
    other = _hand_lrp(net, x, classes, bias=zplus_bias != "include")
    assert not torch.allclose(heatmap, other, atol=1e-4), "the two conventions must differ on biased layers"
    sums = heatmap.sum(1)
    if zplus_bias == "exclude":  # eq. (4) as written conserves relevance
        assert torch.allclose(sums, torch.ones(4, dtype=torch.double), atol=1e-10)
    else:  # the positive bias absorbs relevance wherever it is positive for the explained class
        assert (sums < 1 - 1e-3)[classes != 1].all()


def test_paper_literal_setting_is_degenerate():
    """eqs. (3)-(5) as written: every heatmap's L1 norm is 1 whatever the input, so loss (7)
    is constant (0) and its gradient vanishes, while the working setting has a real gradient."""
    head = _double_head()
    generator = torch.Generator().manual_seed(5)
    x = torch.rand(16, 3, 8, 8, dtype=torch.double, generator=generator)
    # conservation is exact up to the stabilizer added to every denominator (deviation ~ stabilizer)
    literal = LRP(head, replace(PAPER_LITERAL, stabilizer=1e-9))
    logits = head(x)
    original, adversarial = top2_classes(logits)
    for classes in (original, adversarial, torch.randint(0, 3, (16,), generator=generator)):
        _, heatmap = literal(x, classes)
        assert (heatmap >= -1e-12).all(), "z+ and z-beta give non-negative relevance"
        assert torch.allclose(heatmap.abs().flatten(1).sum(1), torch.ones(16, dtype=torch.double), atol=1e-6)

    def gradient(options: LRPOptions) -> tuple[torch.Tensor, torch.Tensor]:
        probe = x.clone().requires_grad_(True)
        loss, _ = lrp_loss(LRP(head, options), probe)
        return loss.detach(), torch.autograd.grad(loss.sum(), probe)[0]

    working_loss, working_gradient = gradient(WORKING)
    working_norm = working_gradient.flatten(1).norm(dim=1)
    assert working_loss.abs().min() > 1e-3
    # what is left of the gradient is the stabilizer's doing: it shrinks with it
    for stabilizer, bound in ((1e-6, 1e-3), (1e-9, 1e-6)):
        literal_loss, literal_gradient = gradient(replace(PAPER_LITERAL, stabilizer=stabilizer))
        assert literal_loss.abs().max() < 100 * stabilizer
        literal_norm = literal_gradient.flatten(1).norm(dim=1)
        assert (literal_norm < bound * working_norm).all(), (stabilizer, literal_norm.max(), working_norm.min())


@pytest.mark.parametrize("options", [
    PAPER_LITERAL, WORKING, LRPOptions(zplus_bias="exclude"), LRPOptions(relevance_init="softmax"),
    LRPOptions(rules="epsilon"), LRPOptions(rules="alpha_beta", relevance_init="onehot"),
], ids=lambda o: f"{o.rules}-{o.zplus_bias}-{o.relevance_init}")
def test_one_heatmap_loss_equals_the_two_heatmap_loss_and_its_gradient(options):
    """lrp_loss (one backward, start R^L_org - R^L_adv) against loss (7) from two separate maps."""
    head = _double_head()
    x = torch.rand(5, 3, 8, 8, dtype=torch.double, generator=torch.Generator().manual_seed(1))
    lrp = LRP(head, options)
    probe = x.clone().requires_grad_(True)
    fast, _ = lrp_loss(lrp, probe)
    (fast_gradient,) = torch.autograd.grad(fast.sum(), probe)
    probe = x.clone().requires_grad_(True)
    original, adversarial = top2_classes(head(x))
    _, original_map = lrp(probe, original, create_graph=True)
    _, adversarial_map = lrp(probe, adversarial, create_graph=True)
    reference = lrp_attack_loss(original_map, adversarial_map)
    (reference_gradient,) = torch.autograd.grad(reference.sum(), probe)
    assert torch.allclose(fast, reference, atol=1e-12, rtol=1e-9)
    assert torch.allclose(fast_gradient, reference_gradient, atol=1e-10, rtol=1e-7)


@pytest.mark.parametrize("options", [WORKING, LRPOptions(relevance_init="onehot"), LRPOptions(rules="epsilon")],
                         ids=["logit", "onehot", "epsilon"])
def test_lrp_loss_gradient_matches_finite_differences(options):
    head = _double_head()
    lrp = LRP(head, options)
    x = torch.rand(3, 3, 8, 8, dtype=torch.double, generator=torch.Generator().manual_seed(1))
    classes = torch.tensor([0, 1, 2, 2, 0, 1])

    def loss_at(point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probe = point.clone().requires_grad_(True)
        _, heatmaps = lrp(torch.cat([probe, probe]), classes, create_graph=True)
        return lrp_attack_loss(heatmaps[:3], heatmaps[3:]).sum(), probe

    loss, probe = loss_at(x)
    (gradient,) = torch.autograd.grad(loss, probe)
    assert gradient.abs().sum() > 0, "the heatmap loss must depend on the input"
    for seed in range(3):
        direction = torch.randn(x.shape, dtype=torch.double, generator=torch.Generator().manual_seed(10 + seed))
        h = 1e-6
        numeric = (loss_at(x + h * direction)[0] - loss_at(x - h * direction)[0]) / (2 * h)
        analytic = (gradient * direction).sum()
        assert torch.isclose(numeric.detach(), analytic, rtol=1e-4, atol=1e-8), (float(numeric), float(analytic))


def test_logit_start_with_conserving_rules_is_the_logit_margin():
    """With eq. (4) as written and R^L = f_c(x) delta, loss (7) = f_org - f_adv exactly: LRPC is a margin attack."""
    head = _double_head()
    x = torch.rand(6, 3, 8, 8, dtype=torch.double, generator=torch.Generator().manual_seed(2))
    probe = x.clone().requires_grad_(True)
    loss, logits = lrp_loss(LRP(head, LRPOptions(zplus_bias="exclude")), probe)
    top2 = logits.detach().topk(2, dim=1).values
    assert torch.allclose(loss.detach(), top2[:, 0] - top2[:, 1], atol=1e-5)


def test_bad_options_name_the_key():
    with pytest.raises(ValueError, match="relevance_init"):
        LRPOptions(relevance_init="gradient")
    with pytest.raises(ValueError, match="zplus_bias"):
        LRPOptions(zplus_bias="maybe")
    with pytest.raises(ValueError, match="rules"):
        LRPOptions(rules="lrp0")


# ------------------------------------------------------------------ attacks


def _fooled_by_noise(model: C2FClassifier, images: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor) -> float:
    """Coarse fooling of random sign noise with each image's L2 norm of ``reference - images``."""
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(7))
    eta = reference - images
    scale = eta.flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1)
    noisy = (images + noise * scale.view(-1, 1, 1, 1)).clamp(0, 1)
    coarse_after, _ = model.predict(noisy)
    return float((coarse_after != HIERARCHY.coarse_of(labels)).float().mean())


def test_descending_the_loss_fools_more_than_ascending_and_than_noise(c2f):
    """A working LRPC must beat its own ascent and same-norm random noise by a wide margin (PGD
    with the same budget reaches 0.78 here); the paper-literal setting with the paper's gradient
    step (degenerate loss, gradient ~ stabilizer) must not beat noise."""
    model, images, labels = c2f
    options = dict(eps=30 / 255, steps=30, step="sign", step_size=3 / 255)
    descended = LRPC(model, **options)(images, labels)
    ascended = LRPC(model, ascend=True, **options)(images, labels)
    noise = _fooled_by_noise(model, images, descended.adversarial, labels)
    assert descended.success_rate >= 0.7
    assert descended.success_rate >= ascended.success_rate + 0.5, (descended.success_rate, ascended.success_rate)
    assert descended.success_rate >= noise + 0.5, (descended.success_rate, noise)
    literal = LRPC(model, eps=30 / 255, steps=30, step="gradient", lr=1000.0, zplus_bias="exclude", relevance_init="onehot")
    assert literal(images, labels).success_rate <= noise + 0.1


def test_lrpc_changes_the_coarse_label_within_eps(c2f):
    model, images, labels = c2f
    eps = 60 / 255
    result = LRPC(model, eps=eps, steps=40, step="sign", step_size=0.05)(images, labels)
    assert result.success_rate > 0.8
    assert ((result.adversarial - images).abs().flatten(1).amax(1) <= torch.tensor(eps)).all()
    coarse_after, _ = model.predict(result.adversarial)
    assert torch.equal(result.success, coarse_after != HIERARCHY.coarse_of(labels))
    assert (result.iterations[result.success] >= 1).all() and (result.iterations <= 40).all()
    again = LRPC(model, eps=eps, steps=40, step="sign", step_size=0.05)(images, labels)
    assert torch.equal(again.adversarial, result.adversarial), "no randomness: reruns are identical"


def test_lrpc_paper_gradient_step_moves_images_within_eps(c2f):
    model, images, labels = c2f
    result = LRPC(model, eps=40 / 255, lr=0.05, steps=5, step="gradient")(images[:8], labels[:8])
    assert (result.adversarial != images[:8]).any()
    assert ((result.adversarial - images[:8]).abs().amax() <= torch.tensor(40 / 255))


def test_lrpf_changes_fine_label_and_keeps_coarse(c2f):
    model, images, labels = c2f
    result = LRPF(model, eps=60 / 255, steps=40, step="sign", step_size=0.05)(images, labels)
    coarse_after, fine_after = model.predict(result.adversarial)
    expected = (coarse_after == HIERARCHY.coarse_of(labels)) & (fine_after != labels)
    assert torch.equal(result.success, expected)
    assert result.success_rate > 0.5


@pytest.mark.parametrize("name,options", [
    ("pgdc", {"eps": 60, "step_size": 8, "steps": 20, "seed": 0}),
    ("pgdf", {"eps": 60, "step_size": 8, "steps": 20, "seed": 0}),
    ("dfc", {"steps": 30}),
    ("dff", {"steps": 30}),
])
def test_c2f_baselines(c2f, name, options):
    model, images, labels = c2f
    attack = make_c2f_attack(model, name, **options)
    result = attack(images, labels)
    coarse_after, fine_after = model.predict(result.adversarial)
    coarse = HIERARCHY.coarse_of(labels)
    if attack.level == "coarse":
        assert torch.equal(result.success, coarse_after != coarse)
    else:
        assert torch.equal(result.success, (coarse_after == coarse) & (fine_after != labels))
    assert result.success_rate > 0.6
    if name.startswith("pgd"):
        assert ((result.adversarial - images).abs().flatten(1).amax(1) <= torch.tensor(60 / 255)).all()
        assert torch.equal(make_c2f_attack(model, name, **options)(images, labels).adversarial, result.adversarial)


def test_make_c2f_attack_rejects_unknown_names_and_options(c2f):
    model, _, _ = c2f
    with pytest.raises(ValueError, match="unknown coarse-to-fine attack"):
        make_c2f_attack(model, "lbfgs")
    with pytest.raises(ValueError, match="does not accept"):
        make_c2f_attack(model, "dfc", eps=3)
    with pytest.raises(ValueError, match="does not accept"):
        make_c2f_attack(model, "lrpc", update="sign")
    with pytest.raises(ValueError, match="relevance_init"):
        make_c2f_attack(model, "lrpc", relevance_init="none")


# ------------------------------------------------------------------ explainability metric


def test_perturbation_share_on_top_relevance_by_hand():
    """Two 1x2x2 images; relevance summed over channels, top 25% = the single most relevant pixel."""
    relevance = torch.tensor([[[[4.0, 1.0], [0.0, -9.0]]], [[[0.0, 2.0], [3.0, 1.0]]]])
    eta = torch.tensor([[[[0.3, 0.1], [0.1, 0.5]]], [[[0.2, -0.2], [0.4, 0.2]]]])
    share = perturbation_share_on_top_relevance(eta, relevance, fraction=0.25)
    # image 0: top pixel (positive relevance 4.0) is (0, 0): |0.3| / 1.0; image 1: top (3.0) is (1, 0): 0.4 / 1.0
    assert torch.allclose(share, torch.tensor([0.3, 0.4]))
    half = perturbation_share_on_top_relevance(eta, relevance, fraction=0.5)
    assert torch.allclose(half, torch.tensor([0.4, 0.6]))
    uniform = perturbation_share_on_top_relevance(torch.ones(3, 3, 10, 10), torch.randn(3, 3, 10, 10), fraction=0.1)
    assert torch.allclose(uniform, torch.full((3,), 0.1)), "a uniform perturbation puts `fraction` of its mass anywhere"


def test_one_branch_zplus_gives_zennits_zplus_loss_and_gradient():
    """The fast z+ (no negative-input branch) must be chosen on a ReLU net and change nothing."""
    head = _double_head()
    x = torch.rand(4, 3, 8, 8, dtype=torch.double, generator=torch.Generator().manual_seed(4))
    results = []
    for one_branch in (True, False):
        lrp = LRP(head, WORKING, one_branch_zplus=one_branch)
        reference = lrp.composite
        probe = x.clone().requires_grad_(True)
        loss, _ = lrp_loss(lrp, probe)
        results.append((loss, torch.autograd.grad(loss.sum(), probe)[0]))
        assert (lrp.composite is not reference) == one_branch, "the one-branch rule is used exactly when enabled"
    assert torch.allclose(results[0][0], results[1][0], atol=1e-12)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-12)


class _RecordingBar:
    """Stands in for a tqdm bar: records every update."""

    def __init__(self) -> None:
        self.updates, self.n = [], 0

    def update(self, count=1):
        self.updates.append(int(count))
        self.n += int(count)

    def set_postfix(self, **_):
        pass


@pytest.mark.parametrize("name,options", [
    ("lrpc", {"eps": 60, "steps": 20, "lr": 0.5}),
    ("lrpf", {"eps": 60, "steps": 20, "step": "sign", "step_size": 12.75}),
    ("pgdc", {"eps": 60, "step_size": 8, "steps": 20, "seed": 0}),
    ("dff", {"steps": 30}),
])
def test_attacks_advance_a_progress_bar_image_by_image_without_changing_results(c2f, name, options):
    model, images, labels = c2f
    bar = _RecordingBar()
    with_bar = make_c2f_attack(model, name, **options)(images, labels, progress=bar)
    assert bar.n == len(images) and min(bar.updates) >= 0
    # it moves while the batch runs (images finish at different iterations), not in one jump at the end
    assert sum(1 for u in bar.updates if u > 0) >= 2 and max(bar.updates) < len(images)
    without = make_c2f_attack(model, name, **options)(images, labels)
    assert torch.equal(with_bar.adversarial, without.adversarial) and torch.equal(with_bar.success, without.success)


def test_lrpf_guard_keeps_the_coarse_label_on_every_iterate_and_fools_at_least_as_often(c2f):
    """guard=backtrack never accepts a step that changes C's label: the final images keep it
    everywhere (an ignored guard would not), and fooling does not fall below the unguarded run."""
    model, images, labels = c2f
    options = dict(eps=120 / 255, steps=30, step="sign", step_size=0.2)
    unguarded = LRPF(model, guard="none", **options)(images, labels)
    guarded = LRPF(model, guard="backtrack", **options)(images, labels)
    coarse = HIERARCHY.coarse_of(labels)
    unguarded_coarse, _ = model.predict(unguarded.adversarial)
    guarded_coarse, guarded_fine = model.predict(guarded.adversarial)
    assert (unguarded_coarse != coarse).any()  # the setting walks over C's boundary without the guard
    assert torch.equal(guarded_coarse, coarse)
    assert torch.equal(guarded.success, guarded_fine != labels)
    assert guarded.success_rate >= unguarded.success_rate


def test_guard_that_blocks_every_step_keeps_the_original_and_stalls():
    from robex.attacks.lrp_attack import LRPAttack

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    images = torch.rand(4, 3, 2, 2)
    labels = net(images).argmax(1)

    def only_the_originals(x: torch.Tensor) -> torch.Tensor:
        return (x - images[: len(x)]).abs().flatten(1).amax(1) == 0 if len(x) == len(images) else torch.zeros(len(x), dtype=torch.bool)

    free = LRPAttack(net, eps=0.5, steps=5, step="sign", step_size=0.1, constraint=only_the_originals)(images, labels)
    blocked = LRPAttack(net, eps=0.5, steps=5, step="sign", step_size=0.1, constraint=only_the_originals,
                        guard="backtrack", guard_halvings=3)(images, labels)
    assert (free.adversarial != images).any()
    assert torch.equal(blocked.adversarial, images)
    assert blocked.stalled.all() and not blocked.success.any()
    with pytest.raises(ValueError, match="guard"):
        LRPAttack(net, guard="clip")
