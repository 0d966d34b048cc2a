"""Searching eps* -- the largest robust layered neighbourhood (Mour 2023, Sect. 3).

``cegis_search``: the oracle-guided loop (after MaRVeL, Kabaha & Drachsler-Cohen): from the
robust eps, the optimizer steps along  w/|w|_inf - lambda * s/|s|_inf  where s_d = d(max margin)/
d eps_d is the robustness-level gradient read off the weakest point (envelope theorem: widening
layer d lets every pixel of d that still has room move along the sign of the margin's gradient,
so s_d = sum_{(i,j) in layer d, room} |dm/dx_ij|); lambda decays each step. A non-robust
expansion goes to CEGIS, which shrinks it towards the robust eps,
eps' = eps_new * cw + eps_robust * (1 - cw) (Sect. 3, "The CEGIS component"), with fixed
(cw_d = (r - d)/(r + 1)) or sensitivity cutting weights, until robust or no longer an expansion;
then the step halves. The loop stops when the step falls below ``tolerance / 4`` (so radii below
``tolerance`` are reachable), or on the query / time budget.

``polish``: condition 2 of Sect. 2 (no expansion of eps* is robust) checked and enforced per layer:
after either search, each layer d grows (doubling steps from ``tolerance``, then bisection) until a
counterexample or a decided "not robust" stops it within ``tolerance``; an UNKNOWN answer also stops
it and is reported as such. :func:`maximality_check` then asks eps* + tolerance e_d for every d and
reports the share refuted -- the "locally maximal within tolerance" figure of the benchmark.

``binary_search``: the naive baseline of Sect. 3 -- layer by layer in weight order, a binary
search for the largest robust eps_d with the earlier layers fixed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from robex.verify.layers import fixed_cutting_weights, sensitivity_cutting_weights
from robex.verify.oracle import LayeredOracle, Verdict
from robex.verify.stop import stop_requested

CUTTING_WEIGHTS = ("fixed", "sensitivity")


@dataclass
class SearchSettings:
    max_queries: int = 60
    max_seconds: float = 60.0
    tolerance: float = 0.01
    step_size: float = 0.1
    step_growth: float = 1.5
    lambda_: float = 1.0
    lambda_decay: float = 0.8
    max_shrinks: int = 4
    cutting_weights: str = "fixed"
    polish: bool = True
    polish_max_queries: int = 60
    polish_max_seconds: float = 60.0
    polish_attack_scale: int = 4  # polish + maximality check: PGD steps and restarts x this (refute more, MILP less)


@dataclass
class SearchResult:
    """eps* with its size, and what it cost; ``trace`` holds (query number, size) after each
    accepted expansion, for the queries-to-reach-size comparison."""

    eps: np.ndarray
    size: float
    queries: int
    seconds: float
    counts: dict[str, int]
    milp_seconds: list[float]
    trace: list[tuple[int, float]] = field(default_factory=list)
    stop_reason: str = ""
    search_queries: int = 0
    search_size: float = 0.0
    maximality: list[str] = field(default_factory=list)  # per layer: refuted | at_one | robust | unknown

    @property
    def refuted_share(self) -> float:
        """Share of single-layer increments eps* + tolerance e_d that are refuted (or impossible: eps_d = 1)."""
        if not self.maximality:
            return float("nan")
        return sum(kind in ("refuted", "at_one") for kind in self.maximality) / len(self.maximality)


def robustness_gradient(oracle: LayeredOracle, point: torch.Tensor) -> np.ndarray:
    """s_d: first-order growth of the max margin when layer d's radius grows (see module doc)."""
    _, gradient = oracle.margin_gradient(point)
    room = ((gradient > 0) & (point < 1)) | ((gradient < 0) & (point > 0))
    contribution = (gradient.abs() * room).flatten().double()
    layers = oracle.layers.flatten()
    sums = torch.zeros(oracle.num_layers, dtype=torch.float64, device=contribution.device).index_add_(0, layers, contribution)
    return sums.cpu().numpy()


def _size(weights: np.ndarray, eps: np.ndarray) -> float:
    return float(weights @ eps)


def _budget_left(oracle: LayeredOracle, settings: SearchSettings, started: float) -> bool:
    return len(oracle.records) < settings.max_queries and time.perf_counter() - started < settings.max_seconds and not stop_requested()


def _result(oracle, weights, eps, started, trace, reason) -> SearchResult:
    return SearchResult(eps.copy(), _size(weights, eps), len(oracle.records), time.perf_counter() - started, oracle.counts(), oracle.milp_seconds(), trace, reason)


def cutting_weights(kind: str, oracle: LayeredOracle, counterexample: torch.Tensor | None) -> np.ndarray:
    if kind == "fixed":
        return fixed_cutting_weights(oracle.num_layers).numpy()
    if kind == "sensitivity":
        point = counterexample if counterexample is not None else oracle.image
        _, gradient = oracle.margin_gradient(point)
        return sensitivity_cutting_weights(gradient[0].sum(0), oracle.layers, oracle.num_layers).numpy()
    raise ValueError(f"cutting_weights={kind!r} is unknown; use one of {CUTTING_WEIGHTS}")


def cegis_search(oracle: LayeredOracle, weights: np.ndarray, settings: SearchSettings, progress: bool = False) -> SearchResult:
    """Optimizer + CEGIS loop (Sect. 3); every accepted eps was proven robust by the oracle."""
    started = time.perf_counter()
    weights = np.asarray(weights, dtype=np.float64)
    eps_robust = np.zeros(oracle.num_layers)
    start = oracle.query(eps_robust)
    if not start.robust:
        return _result(oracle, weights, eps_robust, started, [], "image itself is not robust")
    weakest = start.weakest_point if start.weakest_point is not None else oracle.image
    step, lam = settings.step_size, settings.lambda_
    trace = [(len(oracle.records), 0.0)]
    bar = tqdm(total=settings.max_queries, desc="cegis", disable=not progress, leave=False)
    reason = "step below tolerance"
    while step >= settings.tolerance / 4:
        if not _budget_left(oracle, settings, started):
            reason = "budget"
            break
        sensitivity = robustness_gradient(oracle, weakest)
        direction = weights / weights.max() - lam * sensitivity / max(sensitivity.max(), 1e-30)
        direction = direction / max(np.abs(direction).max(), 1e-30)
        candidate = np.clip(eps_robust + step * direction, 0.0, 1.0)
        lam *= settings.lambda_decay
        if _size(weights, candidate) <= _size(weights, eps_robust) + 1e-12:
            # the robustness term outweighs the size; a pure size step is the only way up
            candidate = np.clip(eps_robust + step * weights / weights.max(), 0.0, 1.0)
            if np.allclose(candidate, eps_robust):
                reason = "every layer at eps = 1"
                break
        record = oracle.query(candidate)
        bar.update(1)
        shrinks = 0
        while not record.robust and shrinks < settings.max_shrinks and _budget_left(oracle, settings, started):
            cw = cutting_weights(settings.cutting_weights, oracle, record.weakest_point)
            candidate = candidate * cw + eps_robust * (1 - cw)
            shrinks += 1
            if np.abs(candidate - eps_robust).max() < settings.tolerance / 4 or _size(weights, candidate) <= _size(weights, eps_robust):
                break
            record = oracle.query(candidate)
            bar.update(1)
        if record.robust and _size(weights, candidate) > _size(weights, eps_robust):
            eps_robust = candidate
            weakest = record.weakest_point if record.weakest_point is not None else weakest
            trace.append((len(oracle.records), _size(weights, eps_robust)))
            step = min(1.0, step * (settings.step_growth if shrinks == 0 else 1.0))
        else:
            step *= 0.5
    bar.close()
    return _result(oracle, weights, eps_robust, started, trace, reason)


def binary_search(oracle: LayeredOracle, weights: np.ndarray, settings: SearchSettings, progress: bool = False) -> SearchResult:
    """Naive baseline: for each layer in decreasing weight order, bisect eps_d in [0, 1]."""
    started = time.perf_counter()
    weights = np.asarray(weights, dtype=np.float64)
    eps = np.zeros(oracle.num_layers)
    if not oracle.query(eps).robust:
        return _result(oracle, weights, eps, started, [], "image itself is not robust")
    trace = [(len(oracle.records), 0.0)]
    order = sorted(range(oracle.num_layers), key=lambda d: (-weights[d], d))
    bar = tqdm(total=settings.max_queries, desc="binary", disable=not progress, leave=False)
    reason = "all layers searched"
    for layer in order:
        low, high = 0.0, 1.0
        while high - low > settings.tolerance:
            if not _budget_left(oracle, settings, started):
                reason = "budget"
                break
            middle = (low + high) / 2
            trial = eps.copy()
            trial[layer] = middle
            robust = oracle.query(trial).robust
            bar.update(1)
            low, high = (middle, high) if robust else (low, middle)
            if robust:
                eps = trial
                trace.append((len(oracle.records), _size(weights, eps)))
        if reason == "budget":
            break
    bar.close()
    return _result(oracle, weights, eps, started, trace, reason)


def polish(oracle: LayeredOracle, weights: np.ndarray, eps: np.ndarray, settings: SearchSettings) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """Grow each layer of a robust eps until refuted within ``tolerance`` (see module doc).

    Every accepted eps is proven robust by the oracle; growth of layer d stops at the first answer
    that is not ROBUST (a counterexample, or UNKNOWN), and bisection narrows [robust, refuted] to
    ``tolerance``. One pass suffices: growing a later layer only enlarges the box, so an increment
    refuted earlier stays refuted (its counterexample stays inside).
    """
    started, first_query = time.perf_counter(), len(oracle.records)
    eps = eps.copy()
    trace = []

    def budget() -> bool:
        return (len(oracle.records) - first_query < settings.polish_max_queries and time.perf_counter() - started < settings.polish_max_seconds
                and not stop_requested())

    order = sorted(range(oracle.num_layers), key=lambda d: (-weights[d], d))
    for layer in order:
        low, high, step = eps[layer], None, settings.tolerance
        while budget() and low < 1.0:
            trial_value = min(1.0, low + step) if high is None else (low + high) / 2
            if high is not None and high - low <= settings.tolerance:
                break
            trial = eps.copy()
            trial[layer] = trial_value
            record = oracle.query(trial)
            if record.robust:
                low, eps = trial_value, trial
                trace.append((len(oracle.records), _size(weights, eps)))
                step *= 2
            else:
                high = trial_value
                if record.verdict is Verdict.UNKNOWN:
                    break  # no proof either way: stop growing this layer (reported by maximality_check)
    return eps, trace


def maximality_check(oracle: LayeredOracle, eps: np.ndarray, tolerance: float) -> list[str]:
    """For each layer d, the verdict on eps + tolerance e_d: ``refuted`` (not robust), ``at_one``
    (eps_d is already 1), ``robust`` (eps* was not maximal) or ``unknown``."""
    kinds = []
    for layer in range(oracle.num_layers):
        if eps[layer] >= 1.0:
            kinds.append("at_one")
            continue
        trial = eps.copy()
        trial[layer] = min(1.0, eps[layer] + tolerance)
        verdict = oracle.query(trial).verdict
        kinds.append({Verdict.NOT_ROBUST: "refuted", Verdict.ROBUST: "robust", Verdict.UNKNOWN: "unknown"}[verdict])
    return kinds


def _stronger_attack(oracle: LayeredOracle, scale: int):
    """Context: the oracle's attack with ``scale`` x steps and restarts (a refutation near eps* is
    worth a stronger attack: it replaces a MILP that rarely decides on boxes with every layer open)."""
    from contextlib import contextmanager
    from dataclasses import replace

    @contextmanager
    def context():
        saved = oracle.settings
        oracle.settings = replace(saved, attack_steps=saved.attack_steps * scale, attack_restarts=saved.attack_restarts * scale)
        try:
            yield
        finally:
            oracle.settings = saved

    return context()


def search_maximal(oracle: LayeredOracle, weights: np.ndarray, settings: SearchSettings, strategy: str, progress: bool = False,
                   check: bool = True) -> SearchResult:
    """``strategy`` (cegis | binary) within the shared budget, then :func:`polish`, then (``check``)
    :func:`maximality_check`; ``search_queries`` / ``search_size`` keep what the search alone reached."""
    search = {"cegis": cegis_search, "binary": binary_search}.get(strategy)
    if search is None:
        raise ValueError(f"strategy={strategy!r} is unknown; use one of ('cegis', 'binary')")
    result = search(oracle, weights, settings, progress)
    result.search_queries, result.search_size = result.queries, result.size
    if result.stop_reason == "image itself is not robust":
        return result
    with _stronger_attack(oracle, max(1, settings.polish_attack_scale)):
        if settings.polish:
            eps, trace = polish(oracle, np.asarray(weights, dtype=np.float64), result.eps, settings)
            result.eps, result.size = eps, _size(weights, eps)
            result.trace.extend(trace)
        if check:
            result.maximality = maximality_check(oracle, result.eps, settings.tolerance)
    result.queries, result.counts, result.milp_seconds = len(oracle.records), oracle.counts(), oracle.milp_seconds()
    result.seconds = sum(r.seconds for r in oracle.records)
    return result


def queries_to_reach(trace: list[tuple[int, float]], size: float) -> int | None:
    """First query count at which a search's accepted size reached ``size`` (None: never)."""
    for queries, reached in trace:
        if reached >= size - 1e-12:
            return queries
    return None
