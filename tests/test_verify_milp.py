"""The verifier on tiny ReLU networks: bounds soundness, MILP vs grid search, the second-max
encoding vs brute force, backend agreement, oracle soundness."""

import itertools

import numpy as np
import pytest
import torch

from robex.attacks.multilabel import MultiLabelPGD, multilabel_margin
from robex.models.double_mnist_cnn import DoubleMnistCNN
from robex.verify.backends import GUROBI_RESTRICTED_LIMIT, GurobiBackend, HighsBackend, choose_backend, gurobi_available
from robex.verify.bounds import interval_bounds, linear_bounds, margin_bounds
from robex.verify.layers import layer_map
from robex.verify.milp import encode_query
from robex.verify.network import affine_matrix, maxpool_windows, parse_network
from robex.verify.oracle import LayeredOracle, OracleSettings, Verdict


def tiny_network(seed=0, hidden=(6,), classes=4):
    torch.manual_seed(seed)
    return DoubleMnistCNN(image_size=8, channels=(3, 3), pool=2, hidden=hidden, num_classes=classes).eval()


def box_on_pixels(image, pixels, eps):
    lower, upper = image.clone(), image.clone()
    for i, j in pixels:
        lower[..., i, j] = (image[..., i, j] - eps).clamp(0, 1)
        upper[..., i, j] = (image[..., i, j] + eps).clamp(0, 1)
    return lower, upper


def grid_points(image, lower, upper, pixels, steps):
    axes = [torch.linspace(float(lower[0, 0, i, j]), float(upper[0, 0, i, j]), steps) for i, j in pixels]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(pixels))
    points = image.repeat(len(grid), 1, 1, 1)
    for column, (i, j) in enumerate(pixels):
        points[:, 0, i, j] = grid[:, column]
    return points


def test_affine_matrices_match_the_layers():
    model = tiny_network()
    operations = parse_network(model, (1, 8, 8))
    x = torch.rand(1, 1, 8, 8)
    for operation in operations:
        y = operation.module(x)
        if operation.kind == "affine":
            weight, bias = affine_matrix(operation)
            assert np.allclose(weight @ x.flatten().double().numpy() + bias, y.detach().flatten().numpy(), atol=1e-5)
        x = y.detach()


def test_bounds_are_sound_and_linear_is_tighter():
    model = tiny_network()
    operations = parse_network(model, (1, 8, 8))
    image = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    lower, upper = (image - 0.15).clamp(0, 1), (image + 0.15).clamp(0, 1)
    interval, linear = interval_bounds(operations, lower, upper), linear_bounds(operations, lower, upper)
    samples = (lower + torch.rand(4000, 1, 8, 8) * (upper - lower)).double()
    activation = samples
    with torch.no_grad():
        for k, operation in enumerate(operations):
            activation = operation.module.double()(activation)
            flat = activation.flatten(1)
            for bounds in (interval, linear):
                low, high = bounds.outputs[k]
                assert bool((flat >= low - 1e-9).all() and (flat <= high + 1e-9).all())
            assert float((linear.outputs[k][1] - linear.outputs[k][0]).sum()) <= float((interval.outputs[k][1] - interval.outputs[k][0]).sum()) + 1e-9
    model.float()
    margins = multilabel_margin(model(samples.float()), torch.zeros(len(samples), dtype=torch.long))
    assert float(margins.max()) <= margin_bounds(operations, linear, 0).objective_upper + 1e-6


@pytest.mark.parametrize("target", [0, 1, 2, 3])
def test_milp_matches_exhaustive_grid_search(target):
    model = tiny_network(seed=3)
    operations = parse_network(model, (1, 8, 8))
    image = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    pixels = [(2, 3), (5, 4)]
    lower, upper = box_on_pixels(image, pixels, 0.5)
    bounds = linear_bounds(operations, lower, upper)
    problem = encode_query(operations, bounds, target, margin_bounds(operations, bounds, target))
    assert problem.num_variables - problem.num_binaries <= 60  # only 2 free pixels + a few neurons
    solution = HighsBackend().solve(problem, time_limit=30, stop_on_sign=False)
    assert solution.status == "optimal"
    points = grid_points(image, lower, upper, pixels, 121)
    with torch.no_grad():
        grid_best = float(multilabel_margin(model(points), torch.full((len(points),), target)).max())
        at_optimum = torch.as_tensor(problem.input_point(solution.values), dtype=torch.float32).view(1, 1, 8, 8)
        optimum_margin = float(multilabel_margin(model(at_optimum), torch.tensor([target])))
    assert grid_best <= solution.objective + 1e-5  # the MILP is a true maximum...
    assert solution.objective <= grid_best + 2e-3  # ...reached up to the grid spacing
    assert abs(optimum_margin - solution.objective) < 1e-4  # and its maximiser is real


def test_second_max_encoding_against_brute_force_over_pairs():
    """max z must equal max over x of the 2nd-largest margin = max over class pairs of the MILP
    max_x min(m_a, m_b), each solved separately (the |C|^2 formulation it replaces)."""
    model = tiny_network(seed=5, classes=5)
    operations = parse_network(model, (1, 8, 8))
    image = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    lower, upper = box_on_pixels(image, [(1, 1), (3, 6), (6, 2)], 0.4)
    bounds = linear_bounds(operations, lower, upper)
    target = 2
    margins = margin_bounds(operations, bounds, target)
    one_query = HighsBackend().solve(encode_query(operations, bounds, target, margins), 30, stop_on_sign=False)
    pair_values = []
    for a, b in itertools.combinations(margins.classes, 2):
        keep = [margins.classes.index(a), margins.classes.index(b)]
        pair = type(margins)([a, b], margins.lower[keep], margins.upper[keep], margins.objective_upper)
        pair_values.append(HighsBackend().solve(encode_query(operations, bounds, target, pair), 30, stop_on_sign=False).objective)
    assert one_query.objective == pytest.approx(max(pair_values), abs=1e-6)


@pytest.mark.skipif(not gurobi_available(), reason="gurobipy is not installed")
def test_backends_agree_on_a_license_sized_model():
    model = tiny_network(seed=7)
    operations = parse_network(model, (1, 8, 8))
    image = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(8))
    lower, upper = (image - 0.08).clamp(0, 1), (image + 0.08).clamp(0, 1)
    bounds = linear_bounds(operations, lower, upper)
    for target in range(2):
        problem = encode_query(operations, bounds, target, margin_bounds(operations, bounds, target))
        assert problem.num_variables <= GUROBI_RESTRICTED_LIMIT and problem.num_constraints <= GUROBI_RESTRICTED_LIMIT
        assert isinstance(choose_backend("auto", problem), GurobiBackend)
        highs = HighsBackend().solve(problem, 30, stop_on_sign=False)
        gurobi = GurobiBackend().solve(problem, 30, stop_on_sign=False)
        assert highs.status == gurobi.status == "optimal"
        assert highs.objective == pytest.approx(gurobi.objective, abs=1e-5)
        # sign-only mode may stop early but must reach the same verdict
        assert (HighsBackend().solve(problem, 30).bound < 0) == (GurobiBackend().solve(problem, 30).bound < 0) == (highs.objective < 0)


def test_auto_picks_highs_for_models_beyond_the_license(caplog):
    model = DoubleMnistCNN(image_size=24, channels=(8,), pool=2).eval()
    operations = parse_network(model, (1, 24, 24))
    lower, upper = torch.zeros(1, 1, 24, 24), torch.ones(1, 1, 24, 24)
    bounds = interval_bounds(operations, lower, upper)
    problem = encode_query(operations, bounds, 0, margin_bounds(operations, bounds, 0))
    assert problem.num_variables > GUROBI_RESTRICTED_LIMIT
    from robex.verify import backends

    backends._logged_fallbacks.clear()  # the fallback is logged once per reason and process
    with caplog.at_level("INFO", logger="robex.verify"):
        assert isinstance(choose_backend("auto", problem), HighsBackend)
    assert "highs" in caplog.text and "license" in caplog.text


def test_oracle_soundness_robust_boxes_survive_attack_and_counterexamples_flip():
    model = tiny_network(seed=9)
    with torch.no_grad():
        model.net[-1].weight.mul_(20)  # a sharper read-out, so that wide boxes do flip the label
    image = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        target = int(model(image.unsqueeze(0)).topk(2).indices[0, 1])  # 2nd-ranked class: fragile
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[1:3, 1:3] = True
    layers = layer_map(mask.unsqueeze(0), merge_from=3)[0]
    oracle = LayeredOracle(model, image, target, layers, 4, OracleSettings(milp_time_limit=20, lp_budget_seconds=0.5))
    verdicts = set()
    for scale in (0.01, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0):
        eps = np.array([1.0, 1.0, 1.0, 0.5]) * scale
        record = oracle.query(eps)
        verdicts.add(record.verdict)
        lower, upper = oracle.box(eps)
        if record.verdict is Verdict.ROBUST:
            strong = MultiLabelPGD(model, eps=torch.as_tensor(eps)[layers].float().unsqueeze(0), steps=60, restarts=16, generator=torch.Generator().manual_seed(0))
            found = strong(image.unsqueeze(0), torch.tensor([target]))
            samples = lower + torch.rand(3000, 1, 8, 8) * (upper - lower)
            assert not bool(found.success[0])
            assert float(oracle.margin(samples).max()) < 0
        elif record.verdict is Verdict.NOT_ROBUST:
            point = record.weakest_point
            assert bool(((point >= lower - 1e-6) & (point <= upper + 1e-6)).all())
            assert float(oracle.margin(point)) > 0
    assert Verdict.ROBUST in verdicts and Verdict.NOT_ROBUST in verdicts
    exact = oracle.verify_exact(np.array([4.0, 2.0, 1.0, 0.5]) * 0.01 / 4)
    assert exact.verdict is Verdict.ROBUST


def test_objective_is_capped_by_the_pair_bound():
    """The second-max variable z starts at the pair bound max_{a<b} min(U_a, U_b, U_ab), never at
    the looser single-margin cap, so the solver's dual bound starts no looser than our own bound."""
    model = tiny_network(seed=5, classes=5)
    operations = parse_network(model, (1, 8, 8))
    image = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    lower, upper = (image - 0.2).clamp(0, 1), (image + 0.2).clamp(0, 1)
    bounds = linear_bounds(operations, lower, upper)
    capped = 0
    for target in range(5):
        margins = margin_bounds(operations, bounds, target)
        problem = encode_query(operations, bounds, target, margins)
        assert problem.objective_upper <= max(margins.objective_upper, problem.objective_lower) + 1e-12
        capped += margins.objective_upper < float(np.sort(margins.upper)[-2]) - 1e-9
    assert capped >= 1  # the pair rows are tighter than the single margins somewhere


def scaled_network(seed, scale=4.0):
    """Conv/ReLU/max-pool/linear with weights scaled up so that moderate boxes open many ReLUs
    and some pooling windows whose pre-activations can all be negative."""
    model = tiny_network(seed=seed, hidden=(8,), classes=5)
    with torch.no_grad():
        for module in model.net:
            if hasattr(module, "weight"):
                module.weight.mul_(scale ** 0.5)
    return model


def test_fused_relu_maxpool_encoding_has_the_same_exact_maximum_with_fewer_binaries():
    """maxpool(relu(z)) = max(0, max_i z_i): the fused encoding (default) must give the separate
    encoding's exact maximum on every box, with fewer binaries. Dropping the constant-0 input of a
    window, or building the fused max from the ReLU's output bounds, changes some maxima here."""
    compared, with_all_negative_window, fewer = 0, 0, 0
    for seed in range(4):
        model = scaled_network(seed)
        operations = parse_network(model, (1, 8, 8))
        pool = next(k for k, op in enumerate(operations) if op.kind == "maxpool")
        assert operations[pool - 1].kind == "relu"
        image = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(50 + seed))
        with torch.no_grad():
            target = int(model(image).argsort(descending=True)[0, 1])
        for eps in (0.05, 0.1, 0.2):
            lower, upper = (image - eps).clamp(0, 1), (image + eps).clamp(0, 1)
            bounds = linear_bounds(operations, lower.double(), upper.double())
            margins = margin_bounds(operations, bounds, target)
            fused = encode_query(operations, bounds, target, margins)
            separate = encode_query(operations, bounds, target, margins, fuse_relu_maxpool=False)
            fused_solution = HighsBackend().solve(fused, 30, stop_on_sign=False)
            separate_solution = HighsBackend().solve(separate, 30, stop_on_sign=False)
            assert fused_solution.status == separate_solution.status == "optimal"
            assert fused_solution.objective == pytest.approx(separate_solution.objective, abs=1e-5)
            # the fused maximiser is a real input whose network margin is the optimum
            point = torch.as_tensor(fused.input_point(fused_solution.values), dtype=torch.float32).view(1, 1, 8, 8)
            with torch.no_grad():
                assert float(multilabel_margin(model(point), torch.tensor([target]))) == pytest.approx(fused_solution.objective, abs=1e-4)
            low, high = bounds.input_of(pool - 1)  # pre-activations of the pooled ReLU
            windows = torch.as_tensor(maxpool_windows(operations[pool]))
            with_all_negative_window += bool(((low[windows].max(dim=1).values < 0) & (high[windows].max(dim=1).values > 0)).any())
            fewer += fused.num_binaries < separate.num_binaries
            compared += 1
    assert with_all_negative_window >= 3  # the constant-0 candidate is exercised
    assert fewer >= compared - 2
