"""MILP backends behind one small interface: HiGHS (highspy, license-free) and Gurobi (gurobipy).

Both stop on the *sign* of the objective (the verifier only needs robust / not robust): as soon
as an incumbent above ``positive_threshold`` exists (a candidate counterexample) or the dual
bound drops below 0 (robust), and both poll :func:`robex.verify.stop.stop_requested` (SIGTERM).
Both accept a warm start (a full solution vector, e.g. the attack's best point completed by
:meth:`MilpProblem.complete`), so the incumbent starts at the attack's margin and every node
whose bound falls below it is pruned at once.

Statuses and what they prove (the oracle reads only these, never a raw bound):
``optimal`` (objective = max), ``positive`` (an incumbent > threshold: candidate counterexample),
``negative`` (dual bound < 0: robust), ``timeout`` / ``stopped`` (UNKNOWN: never robust).
An infeasible MILP raises :class:`InfeasibleQueryError`: a correct encoding of a non-empty box is
always feasible, so infeasibility is a bug and must never be read as "no counterexample".

HiGHS stops on the sign with an objective cutoff too (``objective_bound``): only solutions with
objective >= -``CUTOFF_SLACK`` are kept, so branch and bound prunes every node whose bound is below
that at once, as it would with an incumbent of value 0. Without it a node is pruned only below the
warm start's (negative) margin, and HiGHS explores nodes that cannot decide the sign (measured:
``benchmarks/verify_highs_cutoff.py``, in docs/verify.md). A
cut-off search that ends "infeasible" means no solution reaches the cutoff -- robust -- only if the
MILP itself is feasible, which is checked on a concrete solution (the warm start, or the box centre
completed by a forward pass: :meth:`MilpProblem.is_feasible`); otherwise the query is solved again
without the cutoff, where infeasible raises as above.

``choose_backend("auto", ...)`` takes Gurobi only when its license allows the model (the pip
wheel's restricted license stops at 2,000 variables and 2,000 linear constraints); a bigger model
goes to HiGHS with one log line. ``backend="gurobi"`` on a bigger model is a RobexError.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from robex.utils.errors import RobexError
from robex.verify.milp import MilpProblem, _pass_model, new_highs, run_highs
from robex.verify.stop import stop_requested

log = logging.getLogger("robex.verify")
_logged_fallbacks: set[str] = set()

GUROBI_RESTRICTED_LIMIT = 2000
CUTOFF_SLACK = 1e-6  # the cutoff keeps solutions >= -slack: "none left" proves max < -slack < 0
BACKENDS = ("auto", "highs", "gurobi", "bab")
DECIDED = ("optimal", "positive", "negative")


class InfeasibleQueryError(RuntimeError):
    """The MILP of a robustness query is infeasible: an encoding bug, never a robustness proof."""


@dataclass
class MilpSolution:
    """``objective`` is the incumbent's value (or -inf), ``bound`` the dual (upper) bound,
    ``values`` the incumbent (or None); see the module docstring for ``status``."""

    status: str
    objective: float
    bound: float
    values: np.ndarray | None
    seconds: float
    backend: str

    @property
    def decided(self) -> bool:
        return self.status in DECIDED

    @property
    def proves_robust(self) -> bool:
        """Robust only on a decided answer with a finite negative maximum/bound."""
        if self.status == "negative":
            return math.isfinite(self.bound) and self.bound < 0
        return self.status == "optimal" and math.isfinite(self.bound) and self.bound < 0


def _sign_status(objective: float, bound: float, positive_threshold: float) -> str | None:
    if objective > positive_threshold:
        return "positive"
    if math.isfinite(bound) and bound < 0:
        return "negative"
    return None


def _infeasible(backend: str, problem: MilpProblem) -> InfeasibleQueryError:
    return InfeasibleQueryError(
        f"{backend}: the MILP ({problem.num_variables} variables, {problem.num_constraints} constraints) is infeasible; "
        "the encoding of a non-empty box is always feasible, so this is an encoding/bounds bug, not a robustness proof"
    )


class HighsBackend:
    name = "highs"

    def __init__(self, threads: int = 1, cutoff: bool = True) -> None:
        self.threads = threads
        self.cutoff = cutoff

    def solve(self, problem: MilpProblem, time_limit: float, stop_on_sign: bool = True, positive_threshold: float = 1e-6,
              start: np.ndarray | None = None) -> MilpSolution:
        import highspy

        started = time.perf_counter()
        cutoff = self.cutoff and stop_on_sign
        highs = new_highs(self.threads)
        highs.setOptionValue("time_limit", max(float(time_limit), 0.0))
        highs.setOptionValue("mip_rel_gap", 0.0)
        if cutoff:  # HiGHS (1.16) applies objective_bound to -objective on a maximisation: keeps objective >= -bound
            highs.setOptionValue("objective_bound", CUTOFF_SLACK)
        _pass_model(highs, problem)
        if start is not None:
            solution = highspy.HighsSolution()
            solution.col_value = np.asarray(start, dtype=np.float64).tolist()
            solution.value_valid = True
            highs.setSolution(solution)
        stopped: list[str] = []

        def on_progress(event) -> None:
            if stop_requested():
                stopped.append("stopped")
                event.interrupt()
                return
            if stop_on_sign:
                status = _sign_status(event.data_out.mip_primal_bound, event.data_out.mip_dual_bound, positive_threshold)
                if status is not None:
                    stopped.append(status)
                    event.interrupt()

        highs.cbMipInterrupt.subscribe(on_progress)
        highs.cbMipImprovingSolution.subscribe(on_progress)
        run_highs(highs)
        info = highs.getInfo()
        model_status = highs.getModelStatus()
        if model_status in (highspy.HighsModelStatus.kInfeasible, highspy.HighsModelStatus.kUnboundedOrInfeasible):
            if cutoff and model_status == highspy.HighsModelStatus.kInfeasible:
                if problem.is_feasible(start if start is not None else problem.centre_solution()):
                    # the MILP has a solution, none of them reaches -slack: the maximum is below 0
                    return MilpSolution("negative", -np.inf, -CUTOFF_SLACK, None, time.perf_counter() - started, self.name)
                left = time_limit - (time.perf_counter() - started)  # no witness: decide it without the cutoff
                solution = HighsBackend(self.threads, cutoff=False).solve(problem, left, stop_on_sign, positive_threshold, start)
                solution.seconds = time.perf_counter() - started
                return solution
            raise _infeasible(self.name, problem)
        has_solution = info.primal_solution_status == 2
        values = np.asarray(highs.getSolution().col_value) if has_solution else None
        objective = float(info.objective_function_value) if has_solution else -np.inf
        bound = float(info.mip_dual_bound)
        if model_status == highspy.HighsModelStatus.kOptimal and has_solution:
            status, bound = "optimal", objective
        elif stopped and stopped[-1] == "stopped":
            status = "stopped"
        else:
            status = _sign_status(objective, bound, positive_threshold) or "timeout"
        if cutoff and status in ("optimal", "negative") and not objective >= -CUTOFF_SLACK:
            # under the cutoff a search that ends below it proves only "no solution reaches -slack",
            # not that its incumbent (e.g. the warm start) is the maximum, nor any tighter bound
            status, bound = "negative", -CUTOFF_SLACK
        return MilpSolution(status, objective, bound, values, time.perf_counter() - started, self.name)


class GurobiBackend:
    name = "gurobi"

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads

    def solve(self, problem: MilpProblem, time_limit: float, stop_on_sign: bool = True, positive_threshold: float = 1e-6,
              start: np.ndarray | None = None) -> MilpSolution:
        import gurobipy as gp
        from gurobipy import GRB

        started = time.perf_counter()
        stopped: list[str] = []
        try:
            with gp.Env(empty=True) as env:
                env.setParam("OutputFlag", 0)
                env.start()
                with gp.Model(env=env) as model:
                    model.Params.Threads = self.threads
                    model.Params.TimeLimit = max(float(time_limit), 0.0)
                    model.Params.MIPGap = 0.0
                    vtype = np.where(problem.integer, GRB.BINARY, GRB.CONTINUOUS)
                    upper = np.where(problem.integer, np.minimum(problem.upper, 1.0), problem.upper)
                    variables = model.addMVar(problem.num_variables, lb=problem.lower, ub=upper, vtype=vtype)
                    lower_finite, upper_finite = np.isfinite(problem.row_lower), np.isfinite(problem.row_upper)
                    equal = lower_finite & upper_finite & (problem.row_lower == problem.row_upper)
                    if equal.any():
                        model.addMConstr(problem.matrix[equal], variables, "=", problem.row_lower[equal])
                    for mask, sense, rhs in ((upper_finite & ~equal, "<", problem.row_upper), (lower_finite & ~equal, ">", problem.row_lower)):
                        if mask.any():
                            model.addMConstr(problem.matrix[mask], variables, sense, rhs[mask])
                    model.setObjective(problem.objective @ variables, GRB.MAXIMIZE)
                    if start is not None:
                        variables.Start = np.asarray(start, dtype=np.float64)

                    def on_progress(m, where) -> None:
                        if where not in (GRB.Callback.MIP, GRB.Callback.MIPSOL, GRB.Callback.MIPNODE):
                            return
                        if stop_requested():
                            stopped.append("stopped")
                            m.terminate()
                            return
                        if not stop_on_sign:
                            return
                        if where == GRB.Callback.MIP:
                            best, bound = m.cbGet(GRB.Callback.MIP_OBJBST), m.cbGet(GRB.Callback.MIP_OBJBND)
                        elif where == GRB.Callback.MIPSOL:
                            best, bound = m.cbGet(GRB.Callback.MIPSOL_OBJ), np.inf
                        else:
                            return
                        if _sign_status(best, bound, positive_threshold) is not None:
                            m.terminate()

                    model.optimize(on_progress)
                    if model.Status in (GRB.INFEASIBLE, GRB.INF_OR_UNBD):
                        raise _infeasible(self.name, problem)
                    has_solution = model.SolCount > 0
                    values = np.asarray(variables.X) if has_solution else None
                    objective = float(model.ObjVal) if has_solution else -np.inf
                    bound = float(model.ObjBound)
                    if model.Status == GRB.OPTIMAL and has_solution:
                        status, bound = "optimal", objective
                    elif stopped:
                        status = "stopped"
                    else:
                        status = _sign_status(objective, bound, positive_threshold) or "timeout"
        except gp.GurobiError as error:
            raise RobexError(f"gurobi could not solve the MILP ({problem.num_variables} variables, {problem.num_constraints} constraints): {error}; use verify.oracle.backend=highs or auto") from error
        return MilpSolution(status, objective, bound, values, time.perf_counter() - started, self.name)


def gurobi_available() -> bool:
    try:
        import gurobipy  # noqa: F401
    except ImportError:
        return False
    return True


def fits_gurobi_license(problem: MilpProblem) -> bool:
    return problem.num_variables <= GUROBI_RESTRICTED_LIMIT and problem.num_constraints <= GUROBI_RESTRICTED_LIMIT


def choose_backend(requested: str, problem: MilpProblem, threads: int = 1) -> HighsBackend | GurobiBackend:
    """'highs', 'gurobi', or 'auto' (Gurobi when installed and the model fits its restricted
    license, else HiGHS); logs the choice and the reason once per call."""
    if requested not in BACKENDS:
        raise RobexError(f"verify.oracle.backend={requested!r} is unknown; use one of {BACKENDS}")
    size = f"{problem.num_variables} variables, {problem.num_constraints} constraints, {problem.num_binaries} binaries"
    fits = fits_gurobi_license(problem)
    if requested == "gurobi":
        if not gurobi_available():
            raise RobexError("verify.oracle.backend=gurobi but gurobipy is not installed; use backend=auto or highs")
        if not fits:
            raise RobexError(
                f"verify.oracle.backend=gurobi cannot solve this query ({size}): gurobipy's pip license stops at "
                f"{GUROBI_RESTRICTED_LIMIT} variables/constraints; use backend=auto (falls back to highs) or highs"
            )
        log.debug("MILP backend: gurobi (requested; %s)", size)
        return GurobiBackend(threads)
    if requested == "auto" and fits and gurobi_available():
        log.debug("MILP backend: gurobi (fits the restricted license; %s)", size)
        return GurobiBackend(threads)
    if requested == "highs":
        reason = "requested"
    elif not fits:
        reason = f"model exceeds gurobipy's restricted license of {GUROBI_RESTRICTED_LIMIT} vars/constraints"
    else:
        reason = "gurobipy is not installed"
    if reason not in _logged_fallbacks:  # one log line per reason, not one per query
        _logged_fallbacks.add(reason)
        log.info("MILP backend: highs (%s; first such query: %s)", reason, size)
    return HighsBackend(threads)
