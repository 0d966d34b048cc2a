"""License-free complete check: batched ReLU-splitting branch and bound over optimised linear
bounds (the beta-CROWN recipe, Wang et al. 2021, on top of alpha-CROWN, Xu et al. 2021), in torch.

The query "max over the box of the second-max margin < 0" splits into one sub-query per pair
(a, b) of non-target classes: c_t leaves the top-2 only where m_a = F_a - F_t > 0 and m_b > 0 at
the same point, so the box is robust iff for every pair max_x min(m_a, m_b) < 0. A pair's node
is bounded by the smallest upper bound of its three linear specs m_a, m_b and (m_a + m_b) / 2.

A node is a pair plus a set of ReLU splits (pre-activation z >= 0 or z <= 0). Its bound is a
CROWN back-substitution in which

- every intermediate bound is the root's (valid on the whole box, so on every node), except that
  a split neuron's pre-activation bounds are clamped to its side, and max-pool inputs take the
  clamped ReLU output bounds;
- a split neuron is linear (y = z or y = 0); an unsplit unstable ReLU has the triangle upper line
  and a lower line y >= alpha z with alpha in [0, 1] (any alpha is sound: y >= 0 and y >= z);
- a non-dominated max-pool window has the upper bound
  y <= lam * (sum_i x_i - sum_i l_i + max_i l_i) + (1 - lam) * line(x_top), lam in [0, 1], where
  line = (1 - c) * chord + c * max_i u_i, c in [0, 1], the chord being
  ``robex.verify.bounds.maxpool_upper_chord`` (every line bounds max_i x_i on the box, so every
  convex combination does); each row starts at c = 0 or 1, whichever bounds it tighter;
- each split constraint s z >= 0 (s = +1 active, -1 inactive) enters with a Lagrange multiplier
  beta >= 0: on the node f(x) <= f(x) + beta s z(x), and the right-hand side is bounded over the
  whole box (the beta-CROWN trick that makes the split constraints bite).

alpha, lam and beta are optimised per node and spec row by projected Adam on the bound itself;
every evaluated bound is sound (the parameters are projected before use), so the node keeps the
smallest one. A node closes only on a bound < 0. The union of a node's two children is the node,
so when every node is closed the query is ROBUST. Each evaluated row's maximising box corner is
checked by a float forward pass: a positive margin there is a genuine counterexample (the oracle
re-checks it). A node with no unsplit unstable ReLU whose bound is still >= 0 cannot be refined
(max-pool relaxation): the query then ends "incomplete" (UNKNOWN), never robust.

Branching: the unsplit unstable neuron with the largest BaBSR-style intercept score
lambda^+ * (-u l / (u - l)) for the node's tightest row (ties broken towards wider intervals).
Nodes are processed ``batch`` at a time (the largest bounds first), which is what makes it fast
on CPU and lets the same code run on a GPU.

Written by hand: auto_LiRPA / alpha-beta-CROWN are not dependencies (and not pip-installable
beside this stack); this is the same idea restricted to the layers ``robex.verify.network`` accepts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robex.verify.bounds import NetworkBounds, _affine_transpose, _double, maxpool_upper_chord, maxpool_upper_constant
from robex.verify.network import Operation, maxpool_windows
from robex.verify.stop import stop_requested


@dataclass
class BabSettings:
    batch: int = 64                 # nodes bounded at once
    optimise_steps: int = 20        # Adam steps on alpha / lam / beta per node batch
    root_steps: int = 40            # Adam steps at the root (all pairs)
    learning_rate: float = 0.1
    max_nodes: int = 200_000


@dataclass
class BabResult:
    """status: negative (robust) | positive (counterexample in ``point``) | timeout | stopped |
    incomplete (a node that cannot be split further stayed >= 0). ``bound`` is the largest open
    node bound when undecided (inf if none was computed)."""

    status: str
    bound: float
    nodes: int
    seconds: float
    point: torch.Tensor | None = None
    open_pairs: int = 0

    @property
    def decided(self) -> bool:
        return self.status in ("negative", "positive")

    @property
    def proves_robust(self) -> bool:
        return self.status == "negative"


class _Network:
    """The root bounds and the per-layer tensors the batched back-substitution needs."""

    def __init__(self, operations: list[Operation], bounds: NetworkBounds) -> None:
        self.operations = operations
        self.box = bounds.box
        self.relu_ops = [k for k, op in enumerate(operations) if op.kind == "relu"]
        self.pre = {k: bounds.input_of(k) for k in self.relu_ops}
        self.unstable = {k: (lo < 0) & (hi > 0) for k, (lo, hi) in self.pre.items()}
        self.inputs = {k: bounds.input_of(k) for k in range(len(operations))}
        device = self.box[0].device
        self.biases = {}
        self.windows = {}
        for k, op in enumerate(operations):
            if op.kind == "affine":
                _, bias = _double(op.module)
                if isinstance(op.module, nn.Conv2d):
                    bias = bias.repeat_interleave(op.out_size // bias.numel())
                self.biases[k] = bias
            elif op.kind == "maxpool":
                self.windows[k] = torch.as_tensor(maxpool_windows(op), device=device)

    def node_pre(self, k: int, splits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-activation bounds of ReLU op k for nodes with split signs ``splits`` (N, n)."""
        low, high = self.pre[k]
        low = torch.where(splits > 0, low.clamp_min(0), low.expand_as(splits))
        high = torch.where(splits < 0, high.clamp_max(0), high.expand_as(splits))
        return low, high


def _project(parameter: torch.Tensor, low: float, high: float | None = None) -> torch.Tensor:
    """The parameter's value clamped into its sound range, with the identity gradient (a plain
    clamp has zero gradient at the range's ends, where alpha and lam start)."""
    clamped = parameter.clamp(low, high) if high is not None else parameter.clamp_min(low)
    return parameter + (clamped - parameter).detach()


def _split_signs(coefficients: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(max(c, 0), min(c, 0)) whose gradient at c = 0 is the right derivative (the positive part's).

    ``clamp_min(0)`` and ``clamp_max(0)`` both have zero gradient at exactly 0, so a coefficient that
    is 0 (a max-pool input other than the chord's, a pixel no path reaches) passes no gradient at all:
    measured on a thesis-CNN query, the max-pool weights' gradient then had the wrong sign and 40 Adam
    steps never improved a bound. Parameters start where coefficients are 0 and grow them (the sum line
    adds lam * x_i for every window input), so the right derivative is the one that describes the step.
    """
    positive = torch.where(coefficients >= 0, coefficients, torch.zeros_like(coefficients))
    return positive, coefficients - positive


def _backsubstitute(net: _Network, spec: torch.Tensor, splits: dict[int, torch.Tensor], alpha: dict, lam_pool: dict, beta: dict,
                    record: bool = False):
    """Upper bounds of spec rows (N, classes) over each row's node; returns (bound (N,), input
    coefficients (N, pixels), {relu op: intercept score (N, n)} if ``record``)."""
    lam = spec
    constant = torch.zeros(spec.shape[0], dtype=spec.dtype, device=spec.device)
    scores = {}
    relu_outputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for k in net.relu_ops:  # ReLU output bounds per node, for max-pools that follow
        low, high = net.node_pre(k, splits[k])
        relu_outputs[k] = (low.clamp_min(0), high.clamp_min(0))
    for k in range(len(net.operations) - 1, -1, -1):
        op = net.operations[k]
        if op.kind == "affine":
            constant = constant + lam @ net.biases[k]
            lam = _affine_transpose(op, lam)
        elif op.kind == "relu":
            low, high = net.node_pre(k, splits[k])
            active, unstable = low >= 0, (low < 0) & (high > 0)
            upper_slope = torch.where(unstable, high / (high - low).clamp_min(1e-30), active.to(lam.dtype))
            upper_intercept = torch.where(unstable, -upper_slope * low, torch.zeros_like(low))
            lower_slope = torch.where(unstable, _project(alpha[k], 0.0, 1.0), active.to(lam.dtype))
            positive, negative = _split_signs(lam)
            if record:
                scores[k] = torch.where(unstable, positive * upper_intercept + 1e-9 * (high - low), torch.zeros_like(low)).detach()
            constant = constant + (positive * upper_intercept).sum(dim=1)
            lam = positive * upper_slope + negative * lower_slope
            lam = lam + _project(beta[k], 0.0) * splits[k].to(lam.dtype)  # beta s z with s z >= 0 on the node
        elif op.kind == "maxpool":
            windows = net.windows[k]
            if k - 1 in relu_outputs:
                low, high = relu_outputs[k - 1]
            else:
                low, high = (t.expand(spec.shape[0], -1) for t in net.inputs[k])
            window_low, window_high = low[:, windows], high[:, windows]  # (N, W, K)
            best_low, best = window_low.max(dim=2)
            others_high = window_high.scatter(2, best.unsqueeze(2), float("-inf")).max(dim=2).values
            dominant = (best_low >= others_high).to(lam.dtype)
            window_rows = torch.arange(windows.shape[0], device=lam.device)
            chosen = windows[window_rows, best]  # (N, W)
            top, slope, intercept = maxpool_upper_chord(window_low, window_high)
            _, constant_slope, constant_intercept = maxpool_upper_constant(window_low, window_high)  # same top
            mix = _project(lam_pool[k], 0.0, 1.0)
            weight, toward_constant = mix[..., 0] * (1 - dominant), mix[..., 1]
            slope = (1 - toward_constant) * slope + toward_constant * constant_slope
            intercept = (1 - toward_constant) * intercept + toward_constant * constant_intercept
            top = windows[window_rows, top]
            positive, negative = _split_signs(lam)
            sum_form = best_low - window_low.sum(dim=2)  # constant of lam * (sum x_i - sum l_i + max l)
            constant = constant + (positive * ((1 - weight) * intercept + weight * sum_form)).sum(dim=1)
            new = torch.zeros(lam.shape[0], op.in_size, dtype=lam.dtype, device=lam.device)
            new = new.scatter_add(1, chosen, negative).scatter_add(1, top, positive * (1 - weight) * slope)
            spread = (positive * weight).unsqueeze(2).expand(-1, -1, windows.shape[1])
            lam = new.scatter_add(1, windows.reshape(1, -1).expand(lam.shape[0], -1), spread.reshape(lam.shape[0], -1))
    box_low, box_high = net.box
    positive, negative = _split_signs(lam)
    bound = constant + positive @ box_high + negative @ box_low
    return bound, lam, scores


def _pair_specs(num_classes: int, target: int, pairs: torch.Tensor, dtype, device) -> torch.Tensor:
    """(P, 3, classes): rows m_a, m_b, (m_a + m_b) / 2 of each pair."""
    spec = torch.zeros(len(pairs), 3, num_classes, dtype=dtype, device=device)
    rows = torch.arange(len(pairs), device=device)
    spec[rows, 0, pairs[:, 0]] = 1.0
    spec[rows, 1, pairs[:, 1]] = 1.0
    spec[rows, 2, pairs[:, 0]] = 0.5
    spec[rows, 2, pairs[:, 1]] = 0.5
    spec[:, :, target] -= 1.0
    return spec


def _optimise(net: _Network, spec: torch.Tensor, splits: dict[int, torch.Tensor], steps: int, learning_rate: float):
    """Bound every row of ``spec`` (N, classes) with optimised alpha / lam / beta; returns the
    smallest bound seen per row, the input coefficients and branching scores of the final pass."""
    n = spec.shape[0]
    alpha, lam_pool, beta = {}, {}, {}
    for k in net.relu_ops:
        low, high = net.pre[k]
        alpha[k] = (high > -low).to(spec.dtype).expand(n, -1).clone()  # DeepPoly's choice as the start
        beta[k] = torch.zeros(n, low.numel(), dtype=spec.dtype, device=spec.device)
    for k in net.windows:
        lam_pool[k] = torch.zeros(n, net.windows[k].shape[0], 2, dtype=spec.dtype, device=spec.device)
    parameters = [*alpha.values(), *lam_pool.values(), *beta.values()]
    best = torch.full((n,), float("inf"), dtype=spec.dtype, device=spec.device)
    if lam_pool:  # each row starts from the better of the two max-pool upper lines (as bounds.backsubstitute_upper)
        with torch.no_grad():
            chord_bound, _, _ = _backsubstitute(net, spec, splits, alpha, lam_pool, beta)
            for p in lam_pool.values():
                p[..., 1] = 1.0
            constant_bound, _, _ = _backsubstitute(net, spec, splits, alpha, lam_pool, beta)
            prefer_constant = (constant_bound < chord_bound).to(spec.dtype).view(-1, 1)
            for p in lam_pool.values():
                p[..., 1] = prefer_constant
        best = torch.minimum(chord_bound, constant_bound)
    if steps > 0:
        for p in parameters:
            p.requires_grad_(True)
        optimiser = torch.optim.Adam(parameters, lr=learning_rate)
        for _ in range(steps):
            bound, _, _ = _backsubstitute(net, spec, splits, alpha, lam_pool, beta)
            best = torch.minimum(best, bound.detach())
            if bool((best < 0).all()):
                break
            optimiser.zero_grad()
            bound.sum().backward()
            optimiser.step()
            with torch.no_grad():  # keep the iterates in range too (Adam's state then stays meaningful)
                for group in (alpha, lam_pool):
                    for p in group.values():
                        p.clamp_(0, 1)
                for p in beta.values():
                    p.clamp_min_(0)
    with torch.no_grad():
        bound, coefficients, scores = _backsubstitute(net, spec, splits, alpha, lam_pool, beta, record=True)
    return torch.minimum(best, bound), coefficients, scores


def root_bound(operations: list[Operation], bounds: NetworkBounds, target: int, steps: int, learning_rate: float = 0.1) -> float:
    """The second-max objective's upper bound from alpha/lam-optimised linear bounds (no splits):
    max over pairs of the smallest of the pair's three optimised rows (``steps=0``: plain CROWN)."""
    net = _Network(operations, bounds)
    num_classes = operations[-1].out_size
    device, dtype = bounds.box[0].device, bounds.box[0].dtype
    others = [c for c in range(num_classes) if c != target]
    pairs = torch.tensor([(a, b) for i, a in enumerate(others) for b in others[i + 1:]], device=device)
    spec = _pair_specs(num_classes, target, pairs, dtype, device).reshape(-1, num_classes)
    splits = {k: torch.zeros(spec.shape[0], net.pre[k][0].numel(), dtype=torch.int8, device=device) for k in net.relu_ops}
    bound, _, _ = _optimise(net, spec, splits, steps, learning_rate)
    return float(bound.view(-1, 3).min(dim=1).values.max())


def branch_and_bound(operations: list[Operation], bounds: NetworkBounds, target: int, margin_of, time_limit: float,
                     settings: BabSettings | None = None, shape: tuple[int, ...] | None = None) -> BabResult:
    """Decide max over ``bounds.box`` of the second-max margin < 0 (see the module docstring).
    ``margin_of(points (B, C, H, W))`` is the float multi-label margin (the counterexample check)."""
    settings = settings or BabSettings()
    started = time.perf_counter()
    net = _Network(operations, bounds)
    box_low, box_high = net.box
    dtype, device = box_low.dtype, box_low.device
    num_classes = operations[-1].out_size
    shape = shape or operations[0].in_shape
    others = [c for c in range(num_classes) if c != target]
    all_pairs = torch.tensor([(a, b) for i, a in enumerate(others) for b in others[i + 1:]], device=device)
    empty = {k: torch.zeros(len(all_pairs), net.pre[k][0].numel(), dtype=torch.int8, device=device) for k in net.relu_ops}

    def evaluate(pairs: torch.Tensor, splits: dict, steps: int):
        spec = _pair_specs(num_classes, target, pairs, dtype, device).reshape(-1, num_classes)
        row_splits = {k: s.repeat_interleave(3, dim=0) for k, s in splits.items()}
        row_bound, coefficients, scores = _optimise(net, spec, row_splits, steps, settings.learning_rate)
        row_bound = row_bound.view(-1, 3)
        node_bound, tightest = row_bound.min(dim=1)
        corners = torch.where(coefficients > 0, box_high, box_low).view(-1, *shape)
        with torch.no_grad():
            margins = margin_of(corners).double()
        hit = torch.nonzero(margins > 0).flatten()
        point = corners[hit[0]].unsqueeze(0) if len(hit) else None
        picked = torch.arange(len(pairs), device=device) * 3 + tightest
        return node_bound, point, {k: v[picked] for k, v in scores.items()}

    nodes = len(all_pairs)
    # plain CROWN/DeepPoly first: only the pairs it leaves open get optimised
    node_bound, point, scores = evaluate(all_pairs, empty, 0)
    if point is not None:
        return BabResult("positive", float(node_bound.max()), nodes, time.perf_counter() - started, point)
    open_mask = node_bound >= 0
    if bool(open_mask.any()) and settings.root_steps > 0:
        kept = torch.nonzero(open_mask).flatten()
        optimised, point, optimised_scores = evaluate(all_pairs[kept], {k: s[kept] for k, s in empty.items()}, settings.root_steps)
        if point is not None:
            return BabResult("positive", float(optimised.max()), nodes, time.perf_counter() - started, point)
        node_bound = node_bound.clone()
        node_bound[kept] = torch.minimum(node_bound[kept], optimised)
        scores = {k: v.clone().index_copy_(0, kept, optimised_scores[k]) for k, v in scores.items()}
        open_mask = node_bound >= 0
    pairs = all_pairs[open_mask]
    splits = {k: s[open_mask] for k, s in empty.items()}
    bound_of = node_bound[open_mask]
    scores = {k: v[open_mask] for k, v in scores.items()}
    open_pairs = len(pairs)
    incomplete = False
    open_leaf_bound = -np.inf  # the largest bound of a leaf its MILP left undecided
    while len(pairs):
        if stop_requested():
            return BabResult("stopped", float(bound_of.max()), nodes, time.perf_counter() - started, open_pairs=open_pairs)
        if time.perf_counter() - started > time_limit or nodes >= settings.max_nodes:
            return BabResult("timeout", float(bound_of.max()), nodes, time.perf_counter() - started, open_pairs=open_pairs)
        # branch every open node of the batch on its best neuron: two children each
        order = torch.argsort(bound_of, descending=True)
        take, rest = order[: max(1, settings.batch // 2)], order[max(1, settings.batch // 2):]
        best_score = torch.full((len(take),), -1.0, dtype=dtype, device=device)
        layer_of = torch.full((len(take),), -1, dtype=torch.long, device=device)
        index_of = torch.zeros(len(take), dtype=torch.long, device=device)
        for k in net.relu_ops:
            free = net.unstable[k].unsqueeze(0) & (splits[k][take] == 0)
            score = torch.where(free, scores[k][take] + 1e-12, torch.full_like(scores[k][take], -1.0))
            value, index = score.max(dim=1)
            better = value > best_score
            best_score = torch.where(better, value, best_score)
            layer_of = torch.where(better, torch.full_like(layer_of, k), layer_of)
            index_of = torch.where(better, index, index_of)
        leaves = layer_of < 0
        for leaf in torch.nonzero(leaves).flatten().tolist():
            # every unstable ReLU is split: only the max-pool relaxation is left; the leaf's exact MILP decides it
            node = take[leaf]
            verdict, point = _leaf_milp(operations, net, bounds, target, int(pairs[node, 0]), int(pairs[node, 1]),
                                        {k: splits[k][node] for k in net.relu_ops}, time_limit - (time.perf_counter() - started))
            nodes += 1
            if point is not None:
                point = point.view(1, *shape)
                with torch.no_grad():
                    genuine = float(margin_of(point)) > 0
                if genuine:
                    return BabResult("positive", float(bound_of.max()), nodes, time.perf_counter() - started, point, open_pairs)
            if verdict not in ("negative", "empty"):
                incomplete = True  # this leaf stays open: the query cannot be proven robust any more
                open_leaf_bound = max(open_leaf_bound, float(bound_of[node]))
        take, layer_of, index_of = take[~leaves], layer_of[~leaves], index_of[~leaves]
        if len(take) == 0:
            pairs, splits, bound_of, scores = pairs[rest], {k: v[rest] for k, v in splits.items()}, bound_of[rest], {k: v[rest] for k, v in scores.items()}
            continue
        child_pairs = pairs[take].repeat(2, 1)
        child_splits = {}
        for k in net.relu_ops:
            s = splits[k][take].repeat(2, 1)
            rows = torch.nonzero(layer_of.repeat(2) == k).flatten()
            side = torch.where(rows < len(take), 1, -1).to(torch.int8)
            s[rows, index_of.repeat(2)[rows]] = side
            child_splits[k] = s
        child_bound, point, child_scores = evaluate(child_pairs, child_splits, settings.optimise_steps)
        nodes += len(child_pairs)
        if point is not None:
            return BabResult("positive", float(child_bound.max()), nodes, time.perf_counter() - started, point, open_pairs)
        keep = child_bound >= 0
        pairs = torch.cat([pairs[rest], child_pairs[keep]])
        splits = {k: torch.cat([splits[k][rest], child_splits[k][keep]]) for k in net.relu_ops}
        bound_of = torch.cat([bound_of[rest], child_bound[keep]])
        scores = {k: torch.cat([scores[k][rest], child_scores[k][keep]]) for k in net.relu_ops}
    seconds = time.perf_counter() - started
    if incomplete:  # every other node closed, so the open leaves' bound is the query's
        return BabResult("incomplete", open_leaf_bound, nodes, seconds, open_pairs=open_pairs)
    return BabResult("negative", -np.inf, nodes, seconds, open_pairs=open_pairs)


def _leaf_milp(operations, net: _Network, bounds: NetworkBounds, target: int, a: int, b: int, splits: dict, time_left: float):
    """Decide max min(m_a, m_b) < 0 on a leaf by HiGHS: the exact MILP of the leaf -- the split
    neurons' pre-activation bounds clamped to their side (y = z or y = 0, so only max-pools and the
    pair's min stay binary) and their split constraints (s z >= 0) as rows. Returns (verdict, input
    point or None) with verdict "negative" (the leaf is robust), "positive" (its incumbent, to be
    checked by the caller), "empty" (the leaf MILP is infeasible: contradictory splits, no input
    has this activation pattern, so the leaf closes) or None (undecided)."""
    from robex.verify.backends import HighsBackend, InfeasibleQueryError
    from robex.verify.bounds import margin_bounds
    from robex.verify.milp import encode_query

    if time_left <= 0:
        return None, None
    outputs = list(bounds.outputs)
    for k in net.relu_ops:
        low, high = net.node_pre(k, splits[k].unsqueeze(0))
        low, high = low[0], high[0]
        if k > 0:
            outputs[k - 1] = (low, high)
        outputs[k] = (low.clamp_min(0), high.clamp_min(0))
    for k, op in enumerate(operations):
        if op.kind == "maxpool":
            low, high = outputs[k - 1] if k > 0 else bounds.box
            windows = net.windows[k]
            outputs[k] = (low[windows].max(dim=1).values, high[windows].max(dim=1).values)
        elif op.kind == "flatten" and k > 0:
            outputs[k] = outputs[k - 1]
    leaf_bounds = NetworkBounds(bounds.box, outputs)
    margins = margin_bounds(operations, leaf_bounds, target)
    others = [i for i, c in enumerate(margins.classes) if c not in (a, b)]
    # only the pair's two margins may be picked: push the other classes' margins out of reach
    margins.upper[others] = -np.inf
    margins.lower[others] = -np.inf
    signs = {k: splits[k].cpu().numpy() for k in net.relu_ops}
    try:
        problem = encode_query(operations, leaf_bounds, target, margins, splits=signs)
        solution = HighsBackend().solve(problem, time_limit=time_left)
    except InfeasibleQueryError:
        # contradictory splits: no input of the box has this leaf's activation pattern, so the leaf
        # holds no counterexample (beta-CROWN's "infeasible subdomain"). Unlike a whole query, whose
        # encoding is never infeasible, a leaf can be; its siblings still cover the box.
        return "empty", None
    if solution.proves_robust:
        return "negative", None
    point = None
    if solution.values is not None:
        point = torch.as_tensor(problem.input_point(solution.values), dtype=bounds.box[0].dtype, device=bounds.box[0].device)
    return ("positive" if solution.status in ("positive", "optimal") else None), point
