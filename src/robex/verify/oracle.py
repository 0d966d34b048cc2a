"""The robustness oracle for layered neighbourhoods: cheap checks first, the exact MILP last.

A query eps is answered by the first check that decides it, and the answering check is recorded:

1. ``cache``  -- monotonicity: eps below a proven-robust eps is robust; a stored counterexample
   that lies inside N_eps refutes it.
2. ``attack`` -- the multi-label PGD falsifier (``robex.attacks.multilabel``); its best point is
   also the weakest-point estimate when the query turns out robust.
3. ``bounds`` -- DeepPoly/CROWN-style linear bounds on the second-max objective (< 0: robust),
   then again after LP tightening of unstable neurons (within a time budget). A query they leave
   open meets the escalation attack (box-vertex starts, cosine step; answered as ``attack``).
4. ``milp``   -- the exact MIPVerify-style MILP, warm-started with the attack's best point and
   stopped on the sign of its primal/dual bound. Only a *decided* solver status proves anything:
   a time-out (or a SIGTERM stop) answers UNKNOWN, which callers treat as not robust (sound); an
   infeasible MILP raises (an encoding bug is never a proof).

``verify_exact`` is the final re-verification of eps*: no cache, its own (longer) time limit, a PGD
point only as the MILP's warm start (or, if genuine, as a counterexample), and the record says which
method proved the verdict (``proved_by``: ``bounds``, ``milp:<backend>`` or ``attack``); an undecided
final check stays UNKNOWN.

Every counterexample is re-checked by a float32 forward pass (inside N_eps, target out of the
top-2) before it is believed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import torch
from torch import nn

from robex.attacks.multilabel import MultiLabelPGD, multilabel_margin
from robex.verify.bab import branch_and_bound
from robex.verify.backends import choose_backend
from robex.verify.bounds import linear_bounds, margin_bounds
from robex.verify.layers import neighbourhood_box, pixel_eps
from robex.verify.milp import encode_query, tighten_with_lp
from robex.verify.network import parse_network

log = logging.getLogger("robex.verify")
_logged_bab: set[str] = set()


def _gurobi_fits(problem) -> bool:
    from robex.verify.backends import fits_gurobi_license, gurobi_available

    return problem is not None and fits_gurobi_license(problem) and gurobi_available()
BOX_TOLERANCE = 1e-6


class Verdict(str, Enum):
    ROBUST = "robust"
    NOT_ROBUST = "not_robust"
    UNKNOWN = "unknown"


@dataclass
class QueryRecord:
    """One oracle answer. ``weakest_point`` maximises (approximately, unless answered by a
    finished MILP) the multi-label margin over N_eps; ``objective_upper`` is the best proven
    upper bound on that maximum (inf when no bound was computed)."""

    eps: np.ndarray
    verdict: Verdict
    answered_by: str
    seconds: float
    weakest_point: torch.Tensor | None = None
    weakest_margin: float = -np.inf
    objective_upper: float = np.inf
    milp_seconds: float | None = None
    milp_status: str | None = None
    backend: str | None = None
    milp_variables: int | None = None
    milp_binaries: int | None = None
    proved_by: str | None = None
    details: dict = field(default_factory=dict)

    @property
    def robust(self) -> bool:
        return self.verdict is Verdict.ROBUST


@dataclass
class OracleSettings:
    """Knobs of the cheap checks and the MILP (all plain values, see conf/verify/oracle/)."""

    use_cache: bool = True
    use_attack: bool = True
    use_bounds: bool = True
    attack_steps: int = 20
    attack_restarts: int = 4
    attack_step_fraction: float = 0.25
    escalation_steps: int = 100  # a stronger attack on queries the bounds left open, before the MILP (0: off)
    escalation_restarts: int = 32
    lp_budget_seconds: float = 0.0
    milp_time_limit: float = 20.0
    final_time_limit: float = 60.0
    warm_start: bool = True
    fuse_relu_maxpool: bool = True  # exact reformulation of ReLU + max-pool (robex.verify.milp._encode_max)
    backend: str = "auto"
    license_free: str = "highs"  # what "auto" uses when Gurobi's license does not fit: "highs" or "bab"
    threads: int = 1
    top_k: int = 2


class LayeredOracle:
    """Decides robustness of N_eps around one image for one target label (k = 2)."""

    def __init__(
        self,
        model: nn.Module,
        image: torch.Tensor,
        target: int,
        layers: torch.Tensor,
        num_layers: int,
        settings: OracleSettings | None = None,
        seed: int = 0,
    ) -> None:
        if image.dim() != 3:
            raise ValueError(f"image must have shape (C, H, W), got {tuple(image.shape)}")
        self.model = model.eval()
        parameter = next(model.parameters())
        self.device = parameter.device
        self.image = image.to(self.device, parameter.dtype).unsqueeze(0)
        self.target = int(target)
        self.layers = layers.to(self.device)
        self.num_layers = num_layers
        self.settings = settings or OracleSettings()
        self.operations = parse_network(model, tuple(image.shape))
        self.generator = torch.Generator().manual_seed(seed)
        self.records: list[QueryRecord] = []
        self._robust: list[np.ndarray] = []
        self._counterexamples: list[torch.Tensor] = []

    # ----------------------------------------------------------------- helpers
    def margin(self, points: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            targets = torch.full((len(points),), self.target, device=self.device)
            return multilabel_margin(self.model(points), targets, self.settings.top_k)

    def margin_gradient(self, point: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Multi-label margin at ``point`` (1, C, H, W) and its input gradient (vanilla gradient)."""
        point = point.detach().clone().requires_grad_(True)
        targets = torch.tensor([self.target], device=self.device)
        value = multilabel_margin(self.model(point), targets, self.settings.top_k)
        (gradient,) = torch.autograd.grad(value.sum(), point)
        return float(value.detach()), gradient.detach()

    def box(self, eps: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return neighbourhood_box(self.image, self.layers, torch.as_tensor(eps, device=self.device))

    def is_counterexample(self, point: torch.Tensor, eps: np.ndarray) -> bool:
        """Inside N_eps (up to float tolerance) and the target pushed out of the top-2."""
        lower, upper = self.box(eps)
        inside = bool(((point >= lower - BOX_TOLERANCE) & (point <= upper + BOX_TOLERANCE)).all())
        return inside and float(self.margin(point)) > 0

    # ----------------------------------------------------------------- queries
    def query(self, eps) -> QueryRecord:
        """Answer one query with the cheapest check that decides it (and log the record)."""
        eps = np.clip(np.asarray(eps, dtype=np.float64), 0.0, 1.0)
        started = time.perf_counter()
        record = self._answer(eps, started)
        record.seconds = time.perf_counter() - started
        self.records.append(record)
        if record.robust:
            self._robust.append(eps.copy())
        return record

    def verify_exact(self, eps, time_limit: float | None = None) -> QueryRecord:
        """Final re-verification of eps*: a sound proof (linear bounds, else the exact MILP with
        ``final_time_limit``, warm-started from a PGD point), no cache. ``proved_by`` names the
        method that decided it; a check that does not decide within the limit stays UNKNOWN."""
        eps = np.clip(np.asarray(eps, dtype=np.float64), 0.0, 1.0)
        started = time.perf_counter()
        lower, upper = self.box(eps)
        bounds = linear_bounds(self.operations, lower, upper)
        limit = self.settings.final_time_limit if time_limit is None else time_limit
        weakest_point, weakest_margin = None, -np.inf
        if self.settings.warm_start and float(eps.max()) > 0:
            # a PGD point only to warm-start the MILP (its incumbent prunes); no verdict comes from it
            # unless it is a genuine counterexample, which is a decided "not robust" in itself
            weakest_point, weakest_margin = self._attack(eps)
            if weakest_margin > 0 and self.is_counterexample(weakest_point, eps):
                return QueryRecord(eps, Verdict.NOT_ROBUST, "final", time.perf_counter() - started, weakest_point, weakest_margin, proved_by="attack")
        record = self._milp(eps, bounds, lower, upper, started, self.settings.lp_budget_seconds, weakest_point, weakest_margin,
                            time_limit=limit, use_bounds=True)
        record.answered_by = "final"
        record.seconds = time.perf_counter() - started
        return record

    def _attack(self, eps: np.ndarray, escalate: bool = False) -> tuple[torch.Tensor, float]:
        """The multi-label PGD falsifier on N_eps: (best point, its margin). ``escalate``: the
        stronger attack for queries the bounds left open (vertex starts, cosine step, stop at the
        first success; ``escalation_steps`` x ``escalation_restarts``)."""
        settings = self.settings
        attack = MultiLabelPGD(
            self.model, eps=pixel_eps(self.layers, torch.as_tensor(eps)).float().unsqueeze(0),
            steps=settings.escalation_steps if escalate else settings.attack_steps, step_fraction=settings.attack_step_fraction,
            restarts=settings.escalation_restarts if escalate else settings.attack_restarts, k=settings.top_k, generator=self.generator,
            corner_starts=escalate, step_schedule="cosine" if escalate else "constant", stop_at_first_success=escalate,
        )
        result = attack(self.image, torch.tensor([self.target], device=self.device))
        return result.adversarial, float(result.margin[0])

    def _answer(self, eps: np.ndarray, started: float) -> QueryRecord:
        settings = self.settings
        if settings.use_cache:
            if any(np.all(eps <= robust + 1e-12) for robust in self._robust):
                return QueryRecord(eps, Verdict.ROBUST, "cache", 0.0, proved_by="cache")
            for point in self._counterexamples:
                if self.is_counterexample(point, eps):
                    return QueryRecord(eps, Verdict.NOT_ROBUST, "cache", 0.0, point, float(self.margin(point)), proved_by="cache")
        lower, upper = self.box(eps)
        weakest_point, weakest_margin = self.image, float(self.margin(self.image))
        if weakest_margin > 0:
            self._counterexamples.append(self.image)
            return QueryRecord(eps, Verdict.NOT_ROBUST, "attack", 0.0, self.image, weakest_margin, proved_by="attack")
        if settings.use_attack and float(eps.max()) > 0:
            weakest_point, weakest_margin = self._attack(eps)
            if weakest_margin > 0 and self.is_counterexample(weakest_point, eps):
                self._counterexamples.append(weakest_point)
                return QueryRecord(eps, Verdict.NOT_ROBUST, "attack", 0.0, weakest_point, weakest_margin, proved_by="attack",
                                   details={"attack_seconds": time.perf_counter() - started})
        attack_seconds = time.perf_counter() - started
        bounds = linear_bounds(self.operations, lower, upper)
        linear_seconds = time.perf_counter() - started - attack_seconds
        if settings.use_bounds:
            objective_upper = margin_bounds(self.operations, bounds, self.target).objective_upper
            if objective_upper < 0:
                details = {"attack_seconds": attack_seconds, "bounds_seconds": time.perf_counter() - started - attack_seconds}
                return QueryRecord(eps, Verdict.ROBUST, "bounds", 0.0, weakest_point, weakest_margin, objective_upper, proved_by="bounds", details=details)
        record = self._milp(eps, bounds, lower, upper, started, settings.lp_budget_seconds, weakest_point, weakest_margin, use_bounds=settings.use_bounds)
        record.details["attack_seconds"] = attack_seconds + record.details.get("escalation_seconds", 0.0)
        record.details["bounds_seconds"] = record.details.get("bounds_seconds", 0.0) + linear_seconds
        if record.verdict is Verdict.NOT_ROBUST and record.weakest_point is not None:
            self._counterexamples.append(record.weakest_point)
        return record

    def _milp(self, eps, bounds, lower, upper, started, lp_budget, weakest_point=None, weakest_margin=-np.inf,
              time_limit: float | None = None, use_bounds: bool = True) -> QueryRecord:
        settings = self.settings
        bounds_started = time.perf_counter()
        details = {"unstable_relus": bounds.unstable_count(self.operations)}
        if lp_budget > 0:
            details.update(tighten_with_lp(self.operations, bounds, lp_budget, threads=self.settings.threads))
            details["unstable_relus_after_lp"] = bounds.unstable_count(self.operations)
        margins = margin_bounds(self.operations, bounds, self.target)
        details["bounds_seconds"] = time.perf_counter() - bounds_started
        if margins.objective_upper < 0 and use_bounds:
            return QueryRecord(eps, Verdict.ROBUST, "bounds", 0.0, weakest_point, weakest_margin, margins.objective_upper, proved_by="bounds", details=details)
        if settings.use_attack and settings.escalation_steps > 0 and float(eps.max()) > 0:
            # the bounds left the query open: a stronger attack before the MILP (about 0.5 s on the
            # thesis CNN). It refutes queries on which the MILP times out (docs/verify.md, "Escalation attack").
            escalation_started = time.perf_counter()
            point, margin = self._attack(eps, escalate=True)
            details["escalation_seconds"] = time.perf_counter() - escalation_started
            if margin > 0 and self.is_counterexample(point, eps):
                details["escalated"] = True
                return QueryRecord(eps, Verdict.NOT_ROBUST, "attack", 0.0, point, margin, margins.objective_upper, proved_by="attack", details=details)
            if margin > weakest_margin:  # a better warm start for the MILP
                weakest_point, weakest_margin = point, margin
        limit = settings.milp_time_limit if time_limit is None else time_limit
        problem = None if settings.backend == "bab" else encode_query(self.operations, bounds, self.target, margins,
                                                                         fuse_relu_maxpool=settings.fuse_relu_maxpool)
        if settings.backend == "bab" or (settings.backend == "auto" and settings.license_free == "bab" and not _gurobi_fits(problem)):
            return self._bab(eps, bounds, margins, limit, weakest_point, weakest_margin, details, problem)
        backend = choose_backend(settings.backend, problem, settings.threads)
        start = None
        if settings.warm_start and weakest_point is not None:
            start = problem.complete(weakest_point.detach().double().cpu().numpy().ravel())
        solution = backend.solve(problem, time_limit=limit, start=start)
        bound = min(margins.objective_upper, solution.bound) if solution.proves_robust else margins.objective_upper
        record = QueryRecord(
            eps, Verdict.UNKNOWN, "milp", 0.0, weakest_point, weakest_margin, bound,
            milp_seconds=solution.seconds, milp_status=solution.status, backend=solution.backend,
            milp_variables=problem.num_variables, milp_binaries=problem.num_binaries,
            details={**details, "solver_bound": float(solution.bound)},  # the dual bound it ended with (a time-out's says how far from a proof)
        )
        if solution.values is not None:
            point = torch.as_tensor(problem.input_point(solution.values), device=self.device, dtype=self.image.dtype).view_as(self.image)
            point_margin = float(self.margin(point))
            if point_margin >= weakest_margin or solution.status in ("optimal", "positive"):
                record.weakest_point, record.weakest_margin = point, point_margin
        # only a decided solver status is a proof: a time-out stays UNKNOWN whatever its bound says
        if solution.proves_robust:
            record.verdict, record.proved_by = Verdict.ROBUST, f"milp:{solution.backend}"
        elif record.weakest_point is not None and record.weakest_margin > 0 and self.is_counterexample(record.weakest_point, eps):
            record.verdict, record.proved_by = Verdict.NOT_ROBUST, f"milp:{solution.backend}"
        return record

    def _bab(self, eps, bounds, margins, limit, weakest_point, weakest_margin, details, problem) -> QueryRecord:
        """The license-free complete check (``robex.verify.bab``): ROBUST only when every node closed."""
        if problem is not None and self.settings.backend == "auto" and "bab" not in _logged_bab:
            _logged_bab.add("bab")  # one log line per process, not one per query
            log.info("MILP backend: bab (model exceeds gurobipy's restricted license or gurobipy is missing; first such query: %d variables, %d constraints)",
                     problem.num_variables, problem.num_constraints)
        result = branch_and_bound(self.operations, bounds, self.target, lambda points: self.margin(points.to(self.image.dtype)), limit,
                                  shape=tuple(self.image.shape[1:]))
        record = QueryRecord(
            eps, Verdict.UNKNOWN, "milp", 0.0, weakest_point, weakest_margin, margins.objective_upper,
            milp_seconds=result.seconds, milp_status=result.status, backend="bab",
            milp_variables=None if problem is None else problem.num_variables, milp_binaries=None if problem is None else problem.num_binaries,
            details={**details, "bab_nodes": result.nodes, "bab_open_pairs": result.open_pairs, "solver_bound": float(result.bound)},
        )
        if result.point is not None:
            point = result.point.to(self.device, self.image.dtype).view_as(self.image)
            if self.is_counterexample(point, eps):
                record.weakest_point, record.weakest_margin = point, float(self.margin(point))
                record.verdict, record.proved_by = Verdict.NOT_ROBUST, "bab"
                return record
        if result.proves_robust:  # a time-out, a stop or an unrefinable leaf stays UNKNOWN
            record.verdict, record.proved_by = Verdict.ROBUST, "bab"
        return record

    # ----------------------------------------------------------------- summaries
    def counts(self) -> dict[str, int]:
        kinds = ("cache", "attack", "bounds", "milp")
        return {kind: sum(r.answered_by == kind for r in self.records) for kind in kinds}

    def milp_seconds(self) -> list[float]:
        return [r.milp_seconds for r in self.records if r.milp_seconds is not None]
