"""Claims of the papers and the one rule that gives each a verdict (the reproduction report, issue 15).

A :class:`Claim` is one line of ``docs/reproduction/README.md``: what the paper says, its number,
ours, and a verdict decided here, never typed. The rule (:func:`decide`):

1. ``ours`` is missing (the study has not run)                      -> ``not run`` (reason: the missing file)
2. the claim cannot be tested on what this machine has              -> ``not testable here`` (reason given)
3. ``kind="value"``: |ours - paper| <= tolerance                    -> ``reproduced``
   (tolerance = ``abs_tol`` + 2 binomial standard errors of the paper's proportion at our sample size
   ``n`` when the value is a proportion, so a small study is not failed for its noise alone;
   on ``scale="log"`` the values are compared as log10, tolerance ``log10(factor)``)
   ``kind="profile"``: ``paper`` and ``ours`` are equal-length sequences (a quantile row); close
   when every element is within the tolerance; "same direction" when every element has the
   paper's sign (elements within the tolerance of 0 on both sides count as agreeing)
4. ``kind="value"`` with a ``baseline`` (the value that means "no effect": chance level, 1 for a
   ratio, 0 for a difference): ours and the paper's lie strictly on the same side of it
                                                                     -> ``same direction``
5. ``kind="holds"``: a yes/no statement (an ordering, "A is the worst") computed on the paper's
   own table and on ours; ``ours`` holds and so does the paper's    -> ``reproduced``
6. anything else                                                     -> ``not reproduced``

Nothing is tuned per claim: the tolerance classes are the constants below, each with its reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

REPRODUCED = "reproduced"
SAME_DIRECTION = "same direction"
NOT_REPRODUCED = "not reproduced"
NOT_TESTABLE = "not testable here"
NOT_RUN = "not run"
VERDICTS = (REPRODUCED, SAME_DIRECTION, NOT_REPRODUCED, NOT_TESTABLE, NOT_RUN)

# Tolerance classes (absolute, on the claim's own scale).
PROPORTION_TOL = 0.05    # shares and accuracies (fractions): 5 points, a difference a reader would call "the same"
PERCENT_TOL = 5.0        # the same 5 points for values printed in percent (Fooling(%), Tables 5.1/5.2)
QUANTILE_TOL = 0.05      # relevance quantiles (Tables 3/4, scores normalised to [-1, 1]): 5% of the range
LOG_FACTOR = 3.0         # ratios on a log scale (time ratios, perceptibility): within a factor of 3
RANK_TOL = 0.3           # rank agreement (Spearman, paper = 1 by definition): >= 0.7 is "the same ordering"


@dataclass
class Claim:
    """One claim of one work: ``paper`` and ``ours`` are numbers (or booleans for ``kind="holds"``)."""

    work: str                      # "000" | "001" | "002" | "003"
    key: str                       # short machine name, unique within the work (metrics.json key)
    text: str                      # the claim in words (one line)
    paper: float | bool | None
    ours: float | bool | None
    kind: str = "value"            # "value" | "holds"
    abs_tol: float = PROPORTION_TOL
    n: int | None = None           # our sample size when the value is a proportion (adds 2 SE)
    baseline: float | None = None  # the no-effect value for "same direction" (None: no direction)
    scale: str = "linear"          # "linear" | "log"
    percent: bool = False          # the values are printed in percent (the binomial SE is scaled by 100)
    testable: bool = True
    reason: str = ""               # why not testable / not run, or a note on what was compared
    source: str = ""               # our file the number was read from
    paper_text: str = ""           # how to show the paper's side when it is not a plain number
    ours_text: str = ""
    verdict: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.verdict = decide(self)

    def tolerance(self) -> float:
        if self.scale == "log":
            return math.log10(LOG_FACTOR)
        tol = self.abs_tol
        unit = 100.0 if self.percent else 1.0
        if self.n and isinstance(self.paper, (int, float)) and 0.0 <= float(self.paper) / unit <= 1.0:
            p = float(self.paper) / unit
            tol += 2.0 * unit * math.sqrt(p * (1.0 - p) / self.n)
        return tol

    def verdict_line(self) -> str:
        """The verdict with its reason, as the README prints it."""
        return f"{self.verdict} ({self.reason})" if self.reason and self.verdict in (NOT_RUN, NOT_TESTABLE) else self.verdict


def _missing(value) -> bool:
    if isinstance(value, (list, tuple)):
        return len(value) == 0 or any(_missing(v) for v in value)
    return value is None or (isinstance(value, float) and math.isnan(value))


def decide(claim: Claim) -> str:
    """The verdict of ``claim`` by the rule in this module's docstring."""
    if not claim.testable:
        return NOT_TESTABLE
    if _missing(claim.ours):
        return NOT_RUN
    if _missing(claim.paper):
        return NOT_TESTABLE
    if claim.kind == "holds":
        return REPRODUCED if bool(claim.ours) and bool(claim.paper) else NOT_REPRODUCED
    if claim.kind == "profile":
        paper_seq, ours_seq, tol = [float(v) for v in claim.paper], [float(v) for v in claim.ours], claim.tolerance()
        if len(paper_seq) != len(ours_seq):
            raise ValueError(f"claim {claim.work}/{claim.key}: {len(paper_seq)} paper values but {len(ours_seq)} of ours")
        if all(abs(o - p) <= tol for p, o in zip(paper_seq, ours_seq)):
            return REPRODUCED
        if all(p * o > 0 or (abs(p) <= tol and abs(o) <= tol) for p, o in zip(paper_seq, ours_seq)):
            return SAME_DIRECTION
        return NOT_REPRODUCED
    if claim.kind != "value":
        raise ValueError(f"claim kind {claim.kind!r} is unknown; use 'value', 'profile' or 'holds'")
    paper, ours = float(claim.paper), float(claim.ours)
    if claim.scale == "log":
        if paper <= 0 or ours <= 0:
            return NOT_REPRODUCED
        close = abs(math.log10(ours) - math.log10(paper)) <= claim.tolerance()
        baseline = None if claim.baseline is None else math.log10(claim.baseline)
        paper, ours = math.log10(paper), math.log10(ours)
    else:
        close = abs(ours - paper) <= claim.tolerance()
        baseline = claim.baseline
    if close:
        return REPRODUCED
    if baseline is not None and (paper - baseline) * (ours - baseline) > 0:
        return SAME_DIRECTION
    return NOT_REPRODUCED


def format_value(value, text: str = "") -> str:
    """A claim's number as the README shows it."""
    if text:
        return text
    if _missing(value):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return " / ".join(format_value(v) for v in value)
    value = float(value)
    if value != 0 and (abs(value) >= 1000 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.4g}"
