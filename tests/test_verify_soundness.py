"""Soundness of the verifier where an unsound change must fail: bounds against per-neuron extremes
found by PGD + corner search (not uniform samples, which never reach a box's extremes), forced
solver time-outs (UNKNOWN, never robust), infeasible MILPs (an error, never robust), the warm-start
completion, the Gurobi license guard and the final re-verification."""

import numpy as np
import pytest
import torch

from robex.attacks.multilabel import multilabel_margin
from robex.models.double_mnist_cnn import DoubleMnistCNN
from robex.utils.errors import RobexError
from robex.verify import backends as backends_module
from robex.verify import oracle as oracle_module
from robex.verify.backends import GurobiBackend, HighsBackend, InfeasibleQueryError, MilpSolution, choose_backend, gurobi_available
from robex.verify.bounds import interval_bounds, linear_bounds, margin_bounds
from robex.verify.layers import layer_map
from robex.verify.milp import MilpProblem, encode_query
from robex.verify.network import parse_network
from robex.verify.oracle import LayeredOracle, OracleSettings, Verdict


def network(seed, channels=(3, 4), hidden=(8,), classes=5, size=8):
    torch.manual_seed(seed)
    return DoubleMnistCNN(image_size=size, channels=channels, pool=2, hidden=hidden, num_classes=classes).eval().double()


def activations(model, x):
    """Output of every op of the Sequential, flattened (B, size) each."""
    outputs = []
    for module in model.net:
        x = module(x)
        outputs.append(x.flatten(1))
    return outputs


def pgd_extremes(model, lower, upper, steps=150, restarts=2, seed=0):
    """Per-neuron max and min of every op's output over the box [lower, upper], by projected
    sign-gradient ascent (one batch element per neuron and direction) from corners and random
    starts, plus 256 random box corners: points on the box boundary, where linear bounds are tight."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sizes = [a.shape[1] for a in activations(model, lower)]
    best_high = [torch.full((n,), -np.inf, dtype=torch.float64) for n in sizes]
    best_low = [torch.full((n,), np.inf, dtype=torch.float64) for n in sizes]
    corners = torch.where(torch.rand(256, *lower.shape[1:], generator=generator, dtype=torch.float64) > 0.5, upper, lower)
    with torch.no_grad():
        for k, a in enumerate(activations(model, corners)):
            best_high[k], best_low[k] = torch.maximum(best_high[k], a.max(0).values), torch.minimum(best_low[k], a.min(0).values)
    step = (upper - lower) / 8
    for k, n in enumerate(sizes):
        for _ in range(restarts):
            sign = torch.cat([torch.ones(n), -torch.ones(n)]).double()
            neuron = torch.arange(2 * n) % n
            x = lower + torch.rand(2 * n, *lower.shape[1:], generator=generator, dtype=torch.float64) * (upper - lower)
            for t in range(steps):
                x.requires_grad_(True)
                value = activations(model, x)[k]
                picked = value[torch.arange(2 * n), neuron] * sign
                (gradient,) = torch.autograd.grad(picked.sum(), x)
                with torch.no_grad():
                    scale = step * (0.97 ** t)
                    x = torch.minimum(torch.maximum(x + scale * gradient.sign(), lower), upper)
            with torch.no_grad():
                value = activations(model, x)[k][torch.arange(2 * n), neuron]
                best_high[k] = torch.maximum(best_high[k], value[:n])
                best_low[k] = torch.minimum(best_low[k], value[n:])
    return best_low, best_high


@pytest.mark.parametrize("seed, channels, hidden", [(0, (3, 4), (8,)), (1, (2, 3), (6, 6))])
def test_bounds_contain_pgd_extremes_of_every_neuron(seed, channels, hidden):
    """The second conv's bounds come from the patch back-substitution, the hidden linear layers' and
    the margins' from the dense one: dropping the ReLU upper intercept in either path makes PGD find
    a neuron value beyond its bound (checked by mutation)."""
    model = network(seed, channels, hidden)
    operations = parse_network(model, (1, 8, 8))
    image = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64)
    lower, upper = (image - 0.25).clamp(0, 1), (image + 0.25).clamp(0, 1)
    bounds = linear_bounds(operations, lower, upper)
    interval = interval_bounds(operations, lower, upper)
    assert bounds.unstable_count(operations) >= 5  # enough unstable ReLUs for the relaxation to matter
    low_found, high_found = pgd_extremes(model, lower, upper)
    for k, operation in enumerate(operations):
        low, high = bounds.outputs[k]
        assert bool((high_found[k] <= high + 1e-9).all()), f"op {k} ({operation.kind}): a PGD point exceeds the upper bound"
        assert bool((low_found[k] >= low - 1e-9).all()), f"op {k} ({operation.kind}): a PGD point is below the lower bound"
        assert bool((high <= interval.outputs[k][1] + 1e-9).all())
    # the margins' bounds (dense back-substitution through every layer) against PGD on each margin
    model_float = model
    for target in range(3):
        margins = margin_bounds(operations, bounds, target)
        x = lower + torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(target), dtype=torch.float64) * (upper - lower)
        for t in range(150):
            x.requires_grad_(True)
            value = multilabel_margin(model_float(x), torch.full((64,), target))
            (gradient,) = torch.autograd.grad(value.sum(), x)
            with torch.no_grad():
                x = torch.minimum(torch.maximum(x + (upper - lower) / 8 * 0.97 ** t * gradient.sign(), lower), upper)
        with torch.no_grad():
            scores = model_float(x)
            worst = float(multilabel_margin(scores, torch.full((64,), target)).max())
            single = (scores[:, margins.classes] - scores[:, [target]]).max(0).values.numpy()
        assert worst <= margins.objective_upper + 1e-9
        assert np.all(single <= margins.upper + 1e-9)


def query_problem(seed=3, eps=0.1):
    model = network(seed, channels=(3, 4), hidden=(8,)).float()
    operations = parse_network(model, (1, 8, 8))
    image = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    lower, upper = (image - eps).clamp(0, 1), (image + eps).clamp(0, 1)
    bounds = linear_bounds(operations, lower, upper)
    target = 0
    return model, operations, bounds, target, encode_query(operations, bounds, target, margin_bounds(operations, bounds, target)), (lower, upper)


def test_warm_start_completion_is_feasible_and_scores_the_point():
    model, operations, bounds, target, problem, (lower, upper) = query_problem()
    for seed in range(5):
        x = lower + torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * (upper - lower)
        values = problem.complete(x.double().numpy().ravel())
        rows = problem.matrix @ values
        assert np.all(rows >= problem.row_lower - 1e-7) and np.all(rows <= problem.row_upper + 1e-7)
        assert np.all(values >= problem.lower - 1e-12) and np.all(values <= problem.upper + 1e-12)
        with torch.no_grad():
            margin = float(multilabel_margin(model(x), torch.tensor([target])))
        assert problem.objective @ values == pytest.approx(np.clip(margin, problem.objective_lower, problem.objective_upper), abs=1e-5)


@pytest.mark.parametrize("backend", ["highs", "gurobi"])
def test_time_out_is_unknown_never_robust(backend):
    if backend == "gurobi" and not gurobi_available():
        pytest.skip("gurobipy is not installed")
    _, _, _, _, problem, _ = query_problem(eps=0.15)
    solver = HighsBackend() if backend == "highs" else GurobiBackend()
    solution = solver.solve(problem, time_limit=0.0)
    assert solution.status == "timeout" and not solution.decided and not solution.proves_robust


def test_oracle_reads_a_time_out_as_unknown_even_with_a_negative_bound(monkeypatch):
    """A solver that times out with a negative-looking bound must not make the query robust."""
    model = network(9, channels=(3, 3), hidden=(6,), classes=4).float()
    image = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(10))
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[1:3, 1:3] = True
    layers = layer_map(mask.unsqueeze(0), merge_from=3)[0]
    with torch.no_grad():
        target = int(model(image.unsqueeze(0)).topk(2).indices[0, 0])

    class TimingOut:
        name = "fake"

        def solve(self, problem, time_limit, **_):
            return MilpSolution("timeout", -np.inf, -1.0, None, time_limit, "fake")

    monkeypatch.setattr(oracle_module, "choose_backend", lambda *args, **kwargs: TimingOut())
    settings = OracleSettings(use_attack=False, use_bounds=False, use_cache=False, milp_time_limit=0.0)
    oracle = LayeredOracle(model, image, target, layers, 4, settings)
    record = oracle.query(np.full(4, 0.01))
    assert record.verdict is Verdict.UNKNOWN and not record.robust and record.proved_by is None


def test_real_solver_time_out_in_the_oracle_is_unknown(monkeypatch):
    # without the objective cutoff: with it HiGHS' presolve already proves this small box robust at t = 0
    monkeypatch.setattr(oracle_module, "choose_backend", lambda name, problem, threads: HighsBackend(threads, cutoff=False))
    model = network(9, channels=(3, 3), hidden=(6,), classes=4).float()
    image = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(10))
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[1:3, 1:3] = True
    layers = layer_map(mask.unsqueeze(0), merge_from=3)[0]
    with torch.no_grad():
        target = int(model(image.unsqueeze(0)).topk(2).indices[0, 0])
    settings = OracleSettings(use_attack=False, use_bounds=False, use_cache=False, milp_time_limit=0.0, backend="highs")
    record = LayeredOracle(model, image, target, layers, 4, settings).query(np.full(4, 0.05))
    assert record.milp_status == "timeout" and record.verdict is Verdict.UNKNOWN


def infeasible_problem() -> MilpProblem:
    """x in [0, 1] with the row x >= 2: infeasible."""
    import scipy.sparse as sp

    return MilpProblem(
        lower=np.zeros(2), upper=np.ones(2), integer=np.array([False, True]), matrix=sp.csr_matrix(np.array([[1.0, 0.0]])),
        row_lower=np.array([2.0]), row_upper=np.array([np.inf]), objective=np.array([1.0, 0.0]),
        input_variable=np.array([0]), input_constant=np.zeros(1),
    )


@pytest.mark.parametrize("backend", ["highs", "gurobi"])
def test_infeasible_milp_is_an_error_in_every_backend(backend):
    if backend == "gurobi" and not gurobi_available():
        pytest.skip("gurobipy is not installed")
    solver = HighsBackend() if backend == "highs" else GurobiBackend()
    with pytest.raises(InfeasibleQueryError, match="infeasible"):
        solver.solve(infeasible_problem(), time_limit=10)


def test_infeasible_encoding_is_never_robust_in_the_oracle(monkeypatch):
    model = network(9, channels=(3, 3), hidden=(6,), classes=4).float()
    image = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(10))
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[1:3, 1:3] = True
    layers = layer_map(mask.unsqueeze(0), merge_from=3)[0]
    with torch.no_grad():
        target = int(model(image.unsqueeze(0)).topk(2).indices[0, 0])
    monkeypatch.setattr(oracle_module, "encode_query", lambda *args, **kwargs: infeasible_problem())
    settings = OracleSettings(use_attack=False, use_bounds=False, use_cache=False, warm_start=False, backend="highs")
    with pytest.raises(InfeasibleQueryError):
        LayeredOracle(model, image, target, layers, 4, settings).query(np.full(4, 0.05))


def capped_problem(maximum: float) -> MilpProblem:
    """max x over x in [-1, 1] with the row x <= ``maximum`` and one (idle) binary: its maximum is ``maximum``."""
    import scipy.sparse as sp

    return MilpProblem(
        lower=np.array([-1.0, 0.0]), upper=np.ones(2), integer=np.array([False, True]), matrix=sp.csr_matrix(np.array([[1.0, 0.0]])),
        row_lower=np.array([-np.inf]), row_upper=np.array([maximum]), objective=np.array([1.0, 0.0]),
        input_variable=np.array([0]), input_constant=np.zeros(1),
    )


@pytest.mark.parametrize("maximum", [-0.1, -1e-4, 1e-4, 0.1])
@pytest.mark.parametrize("warm", [False, True])
def test_highs_cutoff_decides_the_sign_of_small_maxima_and_never_claims_a_tighter_bound(maximum, warm):
    """The cutoff keeps solutions >= -1e-6 (HiGHS' objective_bound acts on -objective of a maximisation):
    a cutoff with the wrong sign or size (objective_bound = -0.01) calls max = 1e-4 robust. (Reading a
    search that ended below the cutoff as "optimal at the warm start" is caught on real MILPs by
    test_verify_bab.py::test_highs_with_the_cutoff_agrees_with_the_exact_maximum.)"""
    problem = capped_problem(maximum)
    start = np.array([-1.0, 0.0]) if warm else None  # a solution below the cutoff
    solution = HighsBackend(cutoff=True).solve(problem, time_limit=10, start=start)
    plain = HighsBackend(cutoff=False).solve(problem, time_limit=10, start=start)
    assert solution.decided and plain.decided
    assert solution.proves_robust == (maximum < 0) == plain.proves_robust
    if solution.proves_robust:
        assert maximum <= solution.bound < 0
    else:
        assert solution.status in ("positive", "optimal") and solution.objective > 0


def test_highs_after_a_run_with_another_thread_count_still_solves():
    """HiGHS keeps one scheduler per process; without the restart in ``new_highs`` the second solve
    returned an error status within milliseconds, which the backend read as a time-out."""
    from robex.verify.milp import new_highs, run_highs

    highs = new_highs(2)
    highs.addVar(0.0, 1.0)
    run_highs(highs)
    solution = HighsBackend(threads=1).solve(capped_problem(0.1), time_limit=10)
    assert solution.status in ("positive", "optimal") and solution.objective > 0


def test_gurobi_forced_on_an_oversized_model_is_one_sentence(caplog):
    model = DoubleMnistCNN(image_size=24, channels=(8,), pool=2).eval()
    operations = parse_network(model, (1, 24, 24))
    lower, upper = torch.zeros(1, 1, 24, 24), torch.ones(1, 1, 24, 24)
    bounds = interval_bounds(operations, lower, upper)
    problem = encode_query(operations, bounds, 0, margin_bounds(operations, bounds, 0))
    if gurobi_available():
        with pytest.raises(RobexError, match="license") as error:
            choose_backend("gurobi", problem)
        assert str(error.value).count(". ") == 0  # one sentence
    backends_module._logged_fallbacks.clear()
    with caplog.at_level("INFO", logger="robex.verify"):
        assert isinstance(choose_backend("auto", problem), HighsBackend)
        choose_backend("auto", problem)
    assert sum("license" in message for message in caplog.messages) == 1  # one log line, not one per query


def test_final_reverification_has_its_own_limit_and_names_the_proof():
    """With a search limit too short for the MILP, the query stays UNKNOWN, but the final check
    (its own 30 s limit) decides the same box and records which method proved it."""
    model = network(3, channels=(3, 4), hidden=(8,)).float()
    with torch.no_grad():
        model.net[-1].weight.mul_(5)  # a sharper read-out, so that wide boxes do flip the label
    image = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[3:5, 3:5] = True
    layers = layer_map(mask.unsqueeze(0), merge_from=3)[0]
    with torch.no_grad():
        target = int(model(image.unsqueeze(0)).topk(2).indices[0, 1])
    settings = OracleSettings(use_attack=False, use_cache=False, milp_time_limit=0.0, final_time_limit=30.0, backend="highs")
    oracle = LayeredOracle(model, image, target, layers, 4, settings)
    decided_by_milp = None
    for scale in (0.3, 0.4, 0.5, 0.6):
        eps = np.full(4, scale)
        lower, upper = oracle.box(eps)
        if margin_bounds(oracle.operations, linear_bounds(oracle.operations, lower, upper), target).objective_upper > 0:
            quick = oracle.query(eps)
            final = oracle.verify_exact(eps)
            if final.verdict is not Verdict.UNKNOWN:
                decided_by_milp = (quick, final)
                break
    assert decided_by_milp is not None
    quick, final = decided_by_milp
    assert quick.verdict is Verdict.UNKNOWN and quick.milp_status == "timeout"
    assert final.proved_by == "milp:highs" and final.milp_status in ("optimal", "positive", "negative")
    small = oracle.verify_exact(np.full(4, 0.001))
    assert small.verdict is Verdict.ROBUST and small.proved_by == "bounds"


@pytest.mark.parametrize("target_rank, expected_sign", [(1, "positive"), (0, "negative")])
def test_stop_on_sign_reads_highs_bounds_in_the_maximisation_sense(target_rank, expected_sign):
    """HiGHS' callback reports primal/dual bounds in the user's (max) sense; a sign flip there would
    stop on a 'negative' dual bound for a query whose maximum is positive (a false proof)."""
    torch.manual_seed(0)
    model = DoubleMnistCNN(image_size=16, channels=(4, 8), pool=2, hidden=(16,)).eval()
    operations = parse_network(model, (1, 16, 16))
    image = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    lower, upper = (image - 0.05).clamp(0, 1), (image + 0.05).clamp(0, 1)
    bounds = linear_bounds(operations, lower, upper)
    with torch.no_grad():
        target = int(model(image).topk(2).indices[0, target_rank])
    problem = encode_query(operations, bounds, target, margin_bounds(operations, bounds, target))
    exact = HighsBackend().solve(problem, time_limit=60, stop_on_sign=False)
    assert exact.status == "optimal" and (exact.objective > 0) == (expected_sign == "positive")
    quick = HighsBackend().solve(problem, time_limit=60)
    assert quick.decided and quick.proves_robust == (expected_sign == "negative")
