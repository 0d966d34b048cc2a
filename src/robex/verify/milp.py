"""Exact MILP encoding of the multi-label robustness query (MIPVerify, Tjeng et al. 2019,
adapted to the second-max objective of Mour 2023, Sect. 3).

Variables: the free input pixels (box from eps), one continuous output and one binary per
*unstable* ReLU (l < 0 < u), max-pools in MIPVerify's max encoding (one binary per window input
that can be the maximum), and the second-max objective. Stable ReLUs, fixed pixels and
dominated pool windows create no variables: they stay affine expressions of the variables
(sparse rows), which keeps the model small. Encoded:

- ReLU, l < 0 < u:  y >= z, y >= 0, y <= z - l (1 - a), y <= u a, a in {0, 1}.
- max-pool y = max_i x_i:  y >= x_i, y <= x_i + (u_max - l_i)(1 - a_i), sum_i a_i = 1.
- ReLU followed by max-pool (default ``fuse_relu_maxpool``): the two commute,
  maxpool(relu(z)) = max(0, max_i z_i), so the pair is ONE max over the window's pre-activations
  and a constant 0 -- no binary, output variable or big-M row for that ReLU layer.
- objective: z <= m_c + M_c (1 - b_c) for every class c != t with m_c = F_c - F_t,
  sum_c b_c = 2, b_c in {0, 1}, maximise z. Picking two classes and bounding z by the smaller
  of their margins makes max z = the second-largest margin, so ONE MILP answers the query
  (a direct MaRVeL adaptation would solve |C|^2 of them). Robust iff max z < 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from robex.verify.bounds import MarginBounds, NetworkBounds, refresh_after
from robex.verify.network import Operation, affine_matrix, maxpool_windows

INF = np.inf
FIXED_PIXEL_WIDTH = 1e-12


@dataclass
class MilpProblem:
    """A MILP in array form, shared by every backend: maximise objective . v subject to
    row_lower <= matrix v <= row_upper, lower <= v <= upper, v_i integer where ``integer``."""

    lower: np.ndarray
    upper: np.ndarray
    integer: np.ndarray
    matrix: sp.csr_matrix
    row_lower: np.ndarray
    row_upper: np.ndarray
    objective: np.ndarray
    input_variable: np.ndarray  # per input pixel: its variable index, or -1 when fixed
    input_constant: np.ndarray  # value of fixed pixels
    objective_lower: float = -INF
    objective_upper: float = INF
    fills: list = field(default_factory=list)  # forward-pass steps that complete a solution from the input

    def complete(self, point: np.ndarray) -> np.ndarray:
        """Every variable's value at input ``point`` (flattened image): a feasible MILP solution
        for a point of the box, used to warm-start the solver with the attack's best point."""
        values = np.zeros(self.num_variables)
        free = self.input_variable >= 0
        variables = self.input_variable[free]
        values[variables] = np.clip(np.asarray(point, dtype=np.float64).ravel()[free], self.lower[variables], self.upper[variables])
        for fill in self.fills:
            fill(values)
        return np.clip(values, self.lower, self.upper)

    def centre_solution(self) -> np.ndarray:
        """:meth:`complete` at the centre of the input box (a solution whenever the encoding is right)."""
        point = self.input_constant.copy()
        free = self.input_variable >= 0
        variables = self.input_variable[free]
        point[free] = (self.lower[variables] + self.upper[variables]) / 2
        return self.complete(point)

    def is_feasible(self, values: np.ndarray, tolerance: float = 1e-7) -> bool:
        """Whether ``values`` satisfies every bound, integrality and row of the MILP (to ``tolerance``,
        relative to each row's scale): a concrete witness that the MILP has a solution."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape != self.lower.shape or not np.isfinite(values).all():
            return False
        if (values < self.lower - tolerance).any() or (values > self.upper + tolerance).any():
            return False
        if (np.abs(values[self.integer] - np.round(values[self.integer])) > tolerance).any():
            return False
        rows = self.matrix @ values
        scale = 1.0 + abs(self.matrix) @ np.abs(values)
        return bool((rows >= self.row_lower - tolerance * scale).all() and (rows <= self.row_upper + tolerance * scale).all())

    @property
    def num_variables(self) -> int:
        return len(self.lower)

    @property
    def num_constraints(self) -> int:
        return self.matrix.shape[0]

    @property
    def num_binaries(self) -> int:
        return int(self.integer.sum())

    def input_point(self, values: np.ndarray) -> np.ndarray:
        """The input image (flattened) of a solution vector, clipped to the variables' box."""
        point = self.input_constant.copy()
        free = self.input_variable >= 0
        variables = self.input_variable[free]
        point[free] = np.clip(values[variables], self.lower[variables], self.upper[variables])
        return point


class _ModelBuilder:
    """Collects variables and sparse constraint rows; columns grow as variables are added."""

    def __init__(self) -> None:
        self.lower: list[np.ndarray] = []
        self.upper: list[np.ndarray] = []
        self.integer: list[np.ndarray] = []
        self.blocks: list[sp.coo_matrix] = []
        self.row_lower: list[np.ndarray] = []
        self.row_upper: list[np.ndarray] = []
        self.num_variables = 0
        self.num_rows = 0
        self.fills: list = []

    def add_variables(self, lower: np.ndarray, upper: np.ndarray, integer: bool) -> np.ndarray:
        lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
        indices = np.arange(self.num_variables, self.num_variables + len(lower))
        self.lower.append(lower)
        self.upper.append(upper)
        self.integer.append(np.full(len(lower), integer))
        self.num_variables += len(lower)
        return indices

    def add_rows(self, matrix: sp.spmatrix, lower: np.ndarray, upper: np.ndarray) -> None:
        coo = sp.coo_matrix(matrix)
        self.blocks.append(sp.coo_matrix((coo.data, (coo.row + self.num_rows, coo.col)), shape=(self.num_rows + coo.shape[0], coo.shape[1])))
        self.row_lower.append(np.broadcast_to(np.asarray(lower, dtype=np.float64), (coo.shape[0],)).copy())
        self.row_upper.append(np.broadcast_to(np.asarray(upper, dtype=np.float64), (coo.shape[0],)).copy())
        self.num_rows += coo.shape[0]

    def widen(self, expression: sp.csr_matrix) -> sp.csr_matrix:
        expression = sp.csr_matrix(expression)
        return sp.csr_matrix((expression.data, expression.indices, expression.indptr), shape=(expression.shape[0], self.num_variables))

    def column_block(self, columns: np.ndarray, values: np.ndarray) -> sp.csr_matrix:
        """One entry per row: row i has ``values[i]`` at column ``columns[i]``."""
        rows = np.arange(len(columns))
        return sp.csr_matrix((values, (rows, columns)), shape=(len(columns), self.num_variables))

    def finish(self, objective: np.ndarray, input_variable: np.ndarray, input_constant: np.ndarray) -> MilpProblem:
        data, rows, cols = [], [], []
        for block in self.blocks:
            data.append(block.data)
            rows.append(block.row)
            cols.append(block.col)
        matrix = sp.csr_matrix(
            (np.concatenate(data) if data else np.zeros(0), (np.concatenate(rows) if rows else np.zeros(0, int), np.concatenate(cols) if cols else np.zeros(0, int))),
            shape=(self.num_rows, self.num_variables),
        )
        matrix.sum_duplicates()
        problem = MilpProblem(
            lower=np.concatenate(self.lower), upper=np.concatenate(self.upper), integer=np.concatenate(self.integer),
            matrix=matrix, row_lower=np.concatenate(self.row_lower) if self.row_lower else np.zeros(0),
            row_upper=np.concatenate(self.row_upper) if self.row_upper else np.zeros(0), objective=objective,
            input_variable=input_variable, input_constant=input_constant,
        )
        problem.fills = self.fills
        return problem


def _numpy(bounds: tuple[torch.Tensor, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    return bounds[0].detach().cpu().numpy().astype(np.float64), bounds[1].detach().cpu().numpy().astype(np.float64)


def _encode_layers(operations: list[Operation], bounds: NetworkBounds, last: int, relax: bool = False, splits: dict | None = None,
                   fuse_relu_maxpool: bool = True):
    """Encode ops 0..last; returns (builder, expression E, constant c) of op ``last``'s output,
    and the per-pixel input variable map. ``splits`` ({ReLU op index: signs, +1 z >= 0, -1 z <= 0,
    0 free}) adds those constraints on the pre-activations (a branch-and-bound leaf).
    ``fuse_relu_maxpool`` encodes a ReLU followed by a max-pool as one max (see ``_encode_max``)."""
    builder = _ModelBuilder()
    box_low, box_high = _numpy(bounds.box)
    free = (box_high - box_low) > FIXED_PIXEL_WIDTH
    input_vars = builder.add_variables(box_low[free], box_high[free], integer=False)
    input_variable = np.full(len(box_low), -1)
    input_variable[free] = input_vars
    # rows of E for fixed pixels are empty; their value sits in the constant
    expression = sp.csr_matrix((np.ones(len(input_vars)), (np.flatnonzero(free), input_vars)), shape=(len(box_low), builder.num_variables))
    constant = np.where(free, 0.0, box_low)
    fused = False  # True while the max-pool at k already absorbed the ReLU before it
    for k in range(last + 1):
        operation = operations[k]
        if operation.kind == "affine":
            weight, bias = affine_matrix(operation)
            expression, constant = sp.csr_matrix(weight @ expression), weight @ constant + bias
        elif operation.kind == "relu":
            if splits is not None and k in splits:
                signs = np.asarray(splits[k])
                for sign, low_row, high_row in ((1, 0.0, INF), (-1, -INF, 0.0)):
                    rows = np.flatnonzero(signs == sign)
                    if len(rows):
                        builder.add_rows(builder.widen(expression[rows]), low_row - constant[rows], high_row - constant[rows])
            fused = fuse_relu_maxpool and k + 1 <= last and operations[k + 1].kind == "maxpool"
            if fused:
                # maxpool(relu(z)) = max(0, max_i z_i): one max over the window's pre-activations and
                # the constant 0, so the ReLU needs no binaries of its own (encoded at the max-pool)
                continue
            expression, constant = _encode_relu(builder, expression, constant, *_numpy(bounds.input_of(k)), relax)
        elif operation.kind == "maxpool":
            windows = maxpool_windows(operation)
            low, high = _numpy(bounds.input_of(k - 1) if fused else bounds.input_of(k))
            if fused:  # a zero "input" (empty row, constant 0) joins every window
                zero = len(low)
                expression = sp.vstack([expression, sp.csr_matrix((1, expression.shape[1]))]).tocsr()
                constant, low, high = np.append(constant, 0.0), np.append(low, 0.0), np.append(high, 0.0)
                windows = np.concatenate([windows, np.full((len(windows), 1), zero)], axis=1)
            expression, constant = _encode_max(builder, windows, expression, constant, low, high, relax)
            fused = False
    return builder, builder.widen(expression), constant, input_variable, np.where(free, 0.0, box_low)


def _encode_relu(builder, expression, constant, low, high, relax):
    active, unstable = low >= 0, (low < 0) & (high > 0)
    index = np.flatnonzero(unstable)
    keep = sp.diags(active.astype(np.float64))
    new_expression = builder.widen(keep @ expression)
    new_constant = np.where(active, constant, 0.0)
    if len(index) == 0:
        return new_expression, new_constant
    lo, u, c = low[index], high[index], constant[index]
    outputs = builder.add_variables(np.zeros(len(index)), u, integer=False)
    gates = builder.add_variables(np.zeros(len(index)), np.ones(len(index)), integer=not relax)
    pre = builder.widen(expression[index])
    y = builder.column_block(outputs, np.ones(len(index)))
    builder.add_rows(y - pre, c, INF)  # y >= z
    builder.add_rows(y - pre - builder.column_block(gates, lo), -INF, c - lo)  # y <= z - l (1 - a)
    builder.add_rows(y - builder.column_block(gates, u), -INF, 0.0)  # y <= u a

    def fill(values, pre=pre, c=c, outputs=outputs, gates=gates):
        z = pre @ values[: pre.shape[1]] + c
        values[outputs], values[gates] = np.maximum(z, 0.0), (z > 0).astype(np.float64)

    builder.fills.append(fill)
    selection = sp.csr_matrix((np.ones(len(index)), (index, outputs)), shape=(len(low), builder.num_variables))
    return builder.widen(new_expression) + selection, new_constant


def _encode_max(builder, windows, expression, constant, low, high, relax):
    """y_w = max_{i in window w} x_i (MIPVerify's max encoding) for the rows ``windows`` of inputs.

    Also the fused ReLU + max-pool: a ReLU before a max-pool commutes with it,
    maxpool(relu(z)) = max(0, max_i z_i), so the caller passes the pre-activations plus one
    constant-0 input per window. That removes every binary of that ReLU layer (on the thesis
    CNN, most of a query's binaries) at the price of one candidate per window whose
    pre-activations can all be negative."""
    window_low, window_high = low[windows], high[windows]
    best = window_low.argmax(axis=1)
    max_low = window_low[np.arange(len(windows)), best]
    max_high = np.maximum(window_high.max(axis=1), max_low)
    # x_i can be the maximum only if u_i > max_j l_j; the argmax of l always stays a candidate
    # (inputs with u_i <= l_best never exceed x_best), so every window keeps >= 1 candidate
    candidate = window_high > max_low[:, None]
    candidate[np.arange(len(windows)), best] = True
    exact = candidate.sum(axis=1) == 1
    first_candidate = windows[np.arange(len(windows)), best]
    gather = sp.csr_matrix((np.ones(int(exact.sum())), (np.flatnonzero(exact), first_candidate[exact])), shape=(len(windows), len(low)))
    new_expression = builder.widen(gather @ expression)
    new_constant = gather @ constant
    open_windows = np.flatnonzero(~exact)
    if len(open_windows) == 0:
        return new_expression, new_constant
    outputs = builder.add_variables(max_low[open_windows], max_high[open_windows], integer=False)
    window_of, slot = np.nonzero(candidate[open_windows])  # one pair per (open window, candidate input)
    inputs = windows[open_windows][window_of, slot]
    gates = builder.add_variables(np.zeros(len(inputs)), np.ones(len(inputs)), integer=not relax)
    big_m = max_high[open_windows][window_of] - low[inputs]
    x = builder.widen(expression[inputs])
    y = builder.column_block(outputs[window_of], np.ones(len(inputs)))
    builder.add_rows(y - x, constant[inputs], INF)  # y >= x_i
    builder.add_rows(y - x + builder.column_block(gates, big_m), -INF, constant[inputs] + big_m)  # y <= x_i + M (1 - a_i)
    one_hot = sp.csr_matrix((np.ones(len(inputs)), (window_of, gates)), shape=(len(open_windows), builder.num_variables))
    builder.add_rows(one_hot, 1.0, 1.0)  # exactly one maximiser per window
    window_outputs = outputs

    def fill(values, x=x, c=constant[inputs], window_of=window_of, gates=gates, count=len(open_windows)):
        candidate_values = x @ values[: x.shape[1]] + c
        best = np.full(count, -INF)
        np.maximum.at(best, window_of, candidate_values)
        values[window_outputs] = best
        # one gate per window: the first candidate attaining the maximum
        chosen = np.full(count, -1)
        for slot in np.flatnonzero(candidate_values >= best[window_of]):
            if chosen[window_of[slot]] < 0:
                chosen[window_of[slot]] = slot
        values[gates] = 0.0
        values[gates[chosen]] = 1.0

    builder.fills.append(fill)
    selection = sp.csr_matrix((np.ones(len(open_windows)), (open_windows, outputs)), shape=(len(windows), builder.num_variables))
    return builder.widen(new_expression) + selection, new_constant


def encode_query(operations: list[Operation], bounds: NetworkBounds, target: int, margins: MarginBounds, splits: dict | None = None,
                 fuse_relu_maxpool: bool = True) -> MilpProblem:
    """The full MILP of the multi-label query: max z = 2nd-max_{c != t} (F_c - F_t) (restricted
    to the ReLU ``splits`` of a branch-and-bound leaf if given)."""
    builder, scores, score_constant, input_variable, input_constant = _encode_layers(
        operations, bounds, len(operations) - 1, splits=splits, fuse_relu_maxpool=fuse_relu_maxpool)
    second_lower = float(np.sort(margins.lower)[-2])
    # a class whose margin can never reach the second-largest lower bound is never one of the two picked
    # (the two classes with the largest lower bounds always stay, whatever rounding does to U vs L)
    top_lower = set(np.argsort(-margins.lower)[:2].tolist())
    keep = [i for i, upper in enumerate(margins.upper) if upper >= second_lower - 1e-9 or i in top_lower]
    classes = [margins.classes[i] for i in keep]
    lower, upper = margins.lower[keep], margins.upper[keep]
    # the pair bound (max over pairs of min(U_a, U_b, U_ab), bounds.margin_bounds) caps z, so the
    # solver's dual bound starts no looser than our own linear bound and the big-Ms shrink with it
    z_upper = max(min(float(np.sort(upper)[-2]), margins.objective_upper), second_lower)
    z = builder.add_variables(np.array([second_lower]), np.array([z_upper]), integer=False)
    picks = builder.add_variables(np.zeros(len(classes)), np.ones(len(classes)), integer=True)
    margin_rows = scores[classes] - scores[[target] * len(classes)]
    margin_constant = score_constant[classes] - score_constant[target]
    big_m = z_upper - lower
    z_column = builder.column_block(np.full(len(classes), z[0]), np.ones(len(classes)))
    builder.add_rows(z_column - builder.widen(margin_rows) + builder.column_block(picks, big_m), -INF, margin_constant + big_m)
    builder.add_rows(sp.csr_matrix((np.ones(len(picks)), (np.zeros(len(picks), int), picks)), shape=(1, builder.num_variables)), 2.0, 2.0)
    objective = np.zeros(builder.num_variables)
    objective[z[0]] = 1.0
    rows = builder.widen(margin_rows)

    def fill(values):
        margin = rows @ values[: rows.shape[1]] + margin_constant
        top_two = np.argsort(-margin)[:2]
        values[picks] = 0.0
        values[picks[top_two]] = 1.0
        values[z[0]] = float(np.clip(margin[top_two[1]], second_lower, z_upper))

    builder.fills.append(fill)
    problem = builder.finish(objective, input_variable, input_constant)
    problem.objective_lower, problem.objective_upper = second_lower, z_upper
    return problem


def tighten_with_lp(operations: list[Operation], bounds: NetworkBounds, time_budget: float, safety: float = 1e-6, threads: int = 1) -> dict:
    """Tighten pre-activation bounds of unstable ReLUs (after the first layer) by LP
    (MIPVerify's "lp" tightening): min/max each neuron over the triangle relaxation of the
    layers before it, most unstable neurons first, until ``time_budget`` seconds are spent.
    HiGHS re-solves warm-started after each objective change."""
    import highspy

    started = time.perf_counter()
    stats = {"lp_tightened": 0, "lp_solves": 0, "lp_seconds": 0.0}
    affine = [k for k, op in enumerate(operations) if op.kind == "affine"]
    for k in affine[1:]:
        if k + 1 >= len(operations) or operations[k + 1].kind != "relu":
            continue
        low, high = _numpy(bounds.outputs[k])
        unstable = np.flatnonzero((low < 0) & (high > 0))
        if len(unstable) == 0 or time.perf_counter() - started > time_budget:
            continue
        builder, expression, constant, _, _ = _encode_layers(operations, bounds, k, relax=True)
        problem = builder.finish(np.zeros(builder.num_variables), np.zeros(0, int), np.zeros(0))
        highs = new_highs(threads)
        _pass_model(highs, problem, relax=True)
        order = unstable[np.argsort(-(high[unstable] * -low[unstable]))]
        new_low, new_high = low.copy(), high.copy()
        all_columns = np.arange(problem.num_variables, dtype=np.int32)
        for neuron in order:
            if time.perf_counter() - started > time_budget:
                break
            row = expression[neuron].toarray().ravel()
            highs.changeColsCost(len(all_columns), all_columns, row)
            for sense, target in ((highspy.ObjSense.kMinimize, "low"), (highspy.ObjSense.kMaximize, "high")):
                highs.changeObjectiveSense(sense)
                run_highs(highs)
                stats["lp_solves"] += 1
                if highs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
                    continue
                value = highs.getInfo().objective_function_value + constant[neuron]
                if target == "low":
                    new_low[neuron] = max(new_low[neuron], value - safety)
                else:
                    new_high[neuron] = min(new_high[neuron], value + safety)
            stats["lp_tightened"] += 1
        new_low = np.minimum(new_low, new_high)
        device, dtype = bounds.outputs[k][0].device, bounds.outputs[k][0].dtype
        bounds.outputs[k] = (torch.as_tensor(new_low, device=device, dtype=dtype), torch.as_tensor(new_high, device=device, dtype=dtype))
        refresh_after(operations, bounds, k)
    stats["lp_seconds"] = time.perf_counter() - started
    return stats


_scheduler_threads: list[int] = []  # the thread count HiGHS' process-wide scheduler was started with


def new_highs(threads: int):
    """A silent ``highspy.Highs`` with ``threads`` threads. HiGHS starts one scheduler per process,
    and a later instance asking for another thread count fails at ``run()`` with an error status
    (which read as a time-out in 2 ms before this check), so the scheduler is restarted on a change."""
    import highspy

    if _scheduler_threads and _scheduler_threads[0] != threads:
        highspy.Highs.resetThreadScheduler(True)  # blocking: wait for the old workers to stop
        _scheduler_threads.clear()
    if not _scheduler_threads:
        _scheduler_threads.append(threads)
    highs = highspy.Highs()
    highs.silent()
    highs.setOptionValue("threads", threads)
    return highs


def run_highs(highs) -> None:
    """``highs.run()``; an error status (bad option, scheduler clash) raises instead of reading as UNKNOWN."""
    import highspy

    status = highs.run()
    if status == highspy.HighsStatus.kError:
        raise RuntimeError(f"HiGHS run() returned an error status (model status {highs.getModelStatus()}); see HiGHS' log")


def _pass_model(highs, problem: MilpProblem, relax: bool = False, maximize: bool = True) -> None:
    import highspy

    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = problem.num_variables, problem.num_constraints
    lp.col_cost_ = problem.objective
    lp.col_lower_, lp.col_upper_ = problem.lower, problem.upper
    lp.row_lower_, lp.row_upper_ = problem.row_lower, problem.row_upper
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = problem.matrix.indptr
    lp.a_matrix_.index_ = problem.matrix.indices
    lp.a_matrix_.value_ = problem.matrix.data
    lp.sense_ = highspy.ObjSense.kMaximize if maximize else highspy.ObjSense.kMinimize
    if not relax and problem.integer.any():
        lp.integrality_ = [highspy.HighsVarType.kInteger if flag else highspy.HighsVarType.kContinuous for flag in problem.integer]
    highs.passModel(lp)
