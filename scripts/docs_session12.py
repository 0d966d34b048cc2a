"""The session-12 block of docs/verify.md (and its line in the status block), every number read from
the JSONs of benchmarks/verify_longer_limits.py that it names.

    python scripts/docs_session12.py    # rewrites the text between <!-- s12: ... --> and <!-- s12:end -->
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs/benchmarks"
LABEL = {"highs": "HiGHS", "gurobi": "Gurobi", "bab": "branch and bound (`bab`)"}


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _rows(runs: list[dict], method: str) -> list[dict]:
    return [row for run in runs for row in run["rows"] if row["method"] == method]


def _range(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low:.{digits}f}" if low == high else f"{low:.{digits}f} to {high:.{digits}f}"


def _table_row(sample: str, variables: str, run: dict, method: str) -> str:
    rows = _rows([run], method)
    decided = [r for r in rows if r["outcome"] in ("robust", "not_robust")]
    undecided = [r for r in rows if r["outcome"] == "unknown"]
    robust = sum(r["outcome"] == "robust" for r in rows)
    seconds = _range([r["milp_seconds"] for r in decided], 1)
    gaps = (f"{_range([r['best_found'] for r in undecided if r['best_found'] is not None])} / "
            f"{_range([r['bound'] for r in undecided if r['bound'] is not None])}") if undecided else "-"
    return (f"| {sample} | {variables} | {LABEL[method]} | {run['seconds']:g} s | {len(decided)} of {len(rows)} | "
            f"{robust} / {len(decided) - robust} | {seconds} | {gaps} |")


def _seed(run: dict) -> str:
    words = run["command"].split()
    return words[words.index("--seed") + 1] if "--seed" in words else "0"  # the script's default


def _median_variables(run: dict) -> str:
    sizes = [r["variables"] for r in run["rows"] if r.get("variables")]
    return f"{np.median(sizes):,.0f}" if sizes else "-"


def _models_line() -> str:
    """The sampled queries' models, their size and test accuracy, from weights/manifest.json."""
    manifest = json.loads((ROOT / "weights/manifest.json").read_text())
    names = {"none": "double_mnist_thesis", "l0": "double_mnist_thesis_l0", "pgd": "double_mnist_thesis_pgd"}
    parts = [f"{defense} {manifest[key]['test_metrics']['test/exact_set_acc']:.3f}" for defense, key in names.items()]
    parameters = manifest["double_mnist_thesis"]["test_metrics"]["parameters"]
    return (f"Models: the committed thesis-CNN weights (`weights/double_mnist_thesis*`, {parameters:,.0f} parameters), test exact-set accuracy "
            + ", ".join(parts) + " (weights/manifest.json).")


def verify_block() -> str:
    oversized, fitting = _load("verify_longer_limits_highs"), _load("verify_longer_limits_gurobi")
    long_runs = [run for run in (_load("verify_longer_limits_300s_highs"), _load("verify_longer_limits_300s_bab")) if run]
    second = _load("verify_longer_limits_300s_highs_seed1")  # another sample of the oversized time-outs, HiGHS at 300 s
    fitting_long = _load("verify_longer_limits_300s_gurobi_sized_highs")  # the Gurobi-sized sample, HiGHS at 300 s
    oversized_long = long_runs + ([second] if second else [])
    by_backend = _load("verify_decided_by_backend_s9")
    out = ["<!-- s12: generated from the JSONs named in it -->",
    "#### Would a longer limit, or another complete method, decide them? (2026-12-03, session 12)",
    f"`benchmarks/verify_longer_limits.py` draws (seed {_seed(oversized)}) {oversized['sampled']} of session 9's HiGHS time-outs (the queries over Gurobi's",
    f"pip license) and {fitting['sampled']} of its Gurobi time-outs (5 s limit, thesis CNN, all three defenses), and asks each again through the",
    "stage's own oracle (attack, linear bounds, escalation attack, then the complete method warm-started from the attack's best",
    "point) with a longer limit, once per method. Commands: the `command` of `docs/benchmarks/verify_longer_limits_highs.json`,",
    ", ".join(f"`{name}.json`" for name in ("verify_longer_limits_gurobi", "verify_longer_limits_300s_highs", "verify_longer_limits_300s_bab",
                                            "verify_longer_limits_300s_highs_seed1", "verify_longer_limits_300s_gurobi_sized_highs") if _load(name))
    + ". Two single-thread processes shared the two cores; seconds are wall clock. The last column is the undecided queries' gap:",
    "the highest margin any point reached (> 0 would be a counterexample) and the solver's upper bound on it (< 0 would be a proof).",
    _models_line(),
    "",
    "| time-outs at 5 s of | variables (median) | method | limit | decided | robust / counterexample | MILP s to decide | undecided: best margin found / bound |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for method in oversized["methods"]:
        out.append(_table_row("HiGHS (over the license)", _median_variables(oversized), oversized, method))
    for run in long_runs:
        for method in run["methods"]:
            out.append(_table_row("HiGHS (over the license)", _median_variables(oversized), run, method))
    if second:
        out.append(_table_row(f"HiGHS (over the license), second sample (seed {_seed(second)})", _median_variables(second), second, "highs"))
    for method in fitting["methods"]:
        out.append(_table_row("Gurobi (fits the license)", _median_variables(fitting), fitting, method))
    if fitting_long:
        out.append(_table_row("Gurobi (fits the license)", _median_variables(fitting), fitting_long, "highs"))

    gurobi = _rows([fitting], "gurobi")
    gurobi_decided = [r for r in gurobi if r["outcome"] in ("robust", "not_robust")]
    within_default = sum(r["milp_seconds"] <= 10 for r in gurobi_decided)
    longest_limit = max(run["seconds"] for run in [oversized, *oversized_long])
    at_longest = [run for run in [oversized, *oversized_long] if run["seconds"] == longest_limit]
    rates = {m: (sum(r["outcome"] != "unknown" for r in _rows(at_longest, m)), len(_rows(at_longest, m)))
             for m in {m for run in at_longest for m in run["methods"]}}
    best_method = max(rates, key=lambda m: rates[m][0] / rates[m][1])
    best_free, best_asked = rates[best_method]
    highs_fitting = _rows([fitting], "highs")
    at_cap = [r for r in highs_fitting if r["outcome"] == "unknown" and r["bound"] is not None and r["linear_bound"] is not None
              and r["bound"] >= r["linear_bound"] - 1e-9]
    out += ["",
    f"The two kinds of query behave differently. Gurobi decides {len(gurobi_decided)} of its {len(gurobi)} time-outs when given 60 s, in "
    f"{_range([r['milp_seconds'] for r in gurobi_decided], 1)} s of MILP time ({within_default} within the stage's default 10 s): these queries were just",
    "beyond the benchmark's 5 s. On the same queries HiGHS decides "
    f"{sum(r['outcome'] != 'unknown' for r in highs_fitting)} of {len(highs_fitting)} and the branch and bound "
    f"{sum(r['outcome'] != 'unknown' for r in _rows([fitting], 'bab'))}; on {len(at_cap)} of HiGHS's "
    f"{sum(r['outcome'] == 'unknown' for r in highs_fitting)} undecided ones its bound never went below the linear pair bound the oracle",
    "gives it as an objective cap."]
    if fitting_long:
        rows = _rows([fitting_long], "highs")
        decided = [r for r in rows if r["outcome"] != "unknown"]
        out.append(f"At {fitting_long['seconds']:g} s HiGHS decides {len(decided)} of these {len(rows)}"
                   + (f", in {_range([r['milp_seconds'] for r in decided], 0)} s of MILP time." if decided else "."))
    free_60 = {m: sum(r["outcome"] != "unknown" for r in _rows([oversized], m)) for m in oversized["methods"]}
    sentence = (f"The oversized queries need minutes on these cores. At 60 s HiGHS decides {free_60.get('highs', 0)} of {oversized['sampled']} "
                f"and the branch and bound {free_60.get('bab', 0)}")
    for run in oversized_long:
        for method in run["methods"]:
            rows = _rows([run], method)
            decided = [r for r in rows if r["outcome"] != "unknown"]
            where = f"at {run['seconds']:g} s" if run is not second else f"on a second sample (seed {_seed(run)}), at {run['seconds']:g} s"
            counterexamples = sum(r["outcome"] == "not_robust" for r in decided)
            sentence += (f"; {where} {LABEL[method]} decides {len(decided)} of {len(rows)}"
                         + (f" ({counterexamples} by a counterexample)" if counterexamples else "")
                         + (f", in {_range([r['milp_seconds'] for r in decided], 0)} s of MILP time" if method != "bab" and decided else ""))
    out.append(sentence + ".")
    bab_long = next((run for run in long_runs if "bab" in run["methods"]), None)
    if bab_long and "bab" in oversized["methods"]:
        short_bound = {(r["model"], r["image"]): r for r in _rows([oversized], "bab")}
        pairs = [(short_bound[(r["model"], r["image"])], r) for r in _rows([bab_long], "bab")
                 if r["outcome"] == "unknown" and short_bound.get((r["model"], r["image"]), {}).get("outcome") == "unknown"]
        if pairs:
            out.append(f"The branch and bound stalls: on the {len(pairs)} queries it leaves open at both limits, five times the time grows its tree from a median "
                       f"{np.median([a['bab_nodes'] for a, _ in pairs]):,.0f} to {np.median([b['bab_nodes'] for _, b in pairs]):,.0f} nodes, "
                       f"while its bound falls by a median {np.median([a['bound'] - b['bound'] for a, b in pairs]):.3f} "
                       f"(to {_range([b['bound'] for _, b in pairs])}; a proof needs < 0).")
    longest = oversized_long or [oversized]
    open_at_longest = [r for run in longest for m in run["methods"] for r in _rows([run], m) if r["outcome"] == "unknown"]
    if open_at_longest:
        out.append(f"What stays open at the longest limit keeps a wide gap: best margins {_range([r['best_found'] for r in open_at_longest if r['best_found'] is not None])}, "
                   f"bounds {_range([r['bound'] for r in open_at_longest if r['bound'] is not None])}.")
    if by_backend:
        thesis = [by_backend["short"]["by_model"][m]["decided_by_backend"] for m in ("none", "l0", "pgd")]
        fit_q, fit_d = (sum(t["gurobi"][k] for t in thesis) for k in ("queries", "decided"))
        over_q, over_d = (sum(t["highs"][k] for t in thesis) for k in ("queries", "decided"))
        gurobi_rate = len(gurobi_decided) / len(gurobi)
        free_rate = best_free / best_asked
        estimate = (fit_d + (fit_q - fit_d) * gurobi_rate + over_d + (over_q - over_d) * free_rate) / (fit_q + over_q)
        sampled = {(r["model"], r["image"], r["strategy"], r["original_seconds"]) for run in [oversized, *oversized_long] for r in run["rows"]}
        out += ["",
        f"What this means for issue 11's first target, as an estimate from these {len(gurobi) + len(sampled)} sampled queries (not a measurement): if",
        f"every one of session 9's {fit_q - fit_d} thesis-CNN Gurobi time-outs were decided at this sample's rate at 60 s ({gurobi_rate:.2f}) and every one of its",
        f"{over_q - over_d} oversized time-outs at the best license-free rate above ({LABEL[best_method]}, {best_free} of {best_asked} at {longest_limit:g} s), the decided share of its",
        f"{fit_q + over_q:,} MILP queries would rise from {(fit_d + over_d) / (fit_q + over_q):.2f} to about {estimate:.2f}"
        + (", short of 0.90." if estimate < 0.9 else ", above 0.90.")
        + f" Those limits are {60 / 10:g}x and {longest_limit / 10:g}x the stage's default 10 s, and the issue's target is the share within the default.",
        ]
        overall = _load("verify_decided")
        slow = [r["milp_seconds"] for run in oversized_long for m in run["methods"] if m != "bab" for r in _rows([run], m) if r["outcome"] != "unknown"]
        if overall and slow:
            share_over = over_q / (fit_q + over_q)
            gurobi_seconds = float(np.median([r["milp_seconds"] for r in gurobi_decided]))
            days = overall["milp_queries"] * (share_over * float(np.median(slow)) + (1 - share_over) * gurobi_seconds) / 2 / 86400
            out += [f"The benchmark cannot be run at such limits here. Its {overall['milp_queries']:,} MILP queries ({overall['images']} images, both strategies),",
                    f"{share_over:.0%} of them oversized, at the medians of those decided above ({np.median(slow):.0f} s oversized on HiGHS, {gurobi_seconds:.1f} s on Gurobi),",
                    f"would take about {days:.1f} days of the two cores, against a 3-hour session. At the limits it can be run at, the measured shares",
                    "are the ones in the status table."]

    out += ["<!-- s12:end -->", ""]
    return "\n".join(out)


def status_line() -> str:
    fitting, oversized = _load("verify_longer_limits_gurobi"), _load("verify_longer_limits_highs")
    gurobi = _rows([fitting], "gurobi")
    decided = sum(r["outcome"] != "unknown" for r in gurobi)
    runs = [oversized] + [run for run in (_load("verify_longer_limits_300s_highs"), _load("verify_longer_limits_300s_bab"),
                                          _load("verify_longer_limits_300s_highs_seed1")) if run]
    by_limit: dict = {}
    for run in runs:
        for m in run["methods"]:
            rows = _rows([run], m)
            n, asked = by_limit.get((m, run["seconds"]), (0, 0))
            by_limit[(m, run["seconds"])] = (n + sum(r["outcome"] != "unknown" for r in rows), asked + len(rows))
    free = "; ".join(f"{LABEL[m]} " + ", ".join(f"{n} of {asked} at {s:g} s" for (mm, s), (n, asked) in sorted(by_limit.items()) if mm == m)
                     for m in oversized["methods"])
    return (f"<!-- s12-status -->Given 60 s, Gurobi decides {decided} of {len(gurobi)} sampled Gurobi time-outs. Of the sampled "
            f"oversized (HiGHS) time-outs, the license-free methods decide: {free}. Minutes a query are beyond what the benchmark "
            "can be run at here (session 12, \"Would a longer limit ... decide them?\" below).<!-- s12-status:end -->\n")


def main() -> None:
    doc = ROOT / "docs/verify.md"
    content = re.sub(r"<!-- s12-status -->.*?<!-- s12-status:end -->\n", "", doc.read_text(), flags=re.S)
    content = re.sub(r"<!-- s12:.*?<!-- s12:end -->\n\n?", "", content, flags=re.S)
    for anchor in ("<!-- status:end -->", "<!-- s10:end -->\n"):
        if anchor not in content:
            raise SystemExit(f"{doc} has no {anchor.strip()!r} to put the session-12 text beside")
    content = content.replace("<!-- status:end -->", status_line() + "<!-- status:end -->", 1)
    content = content.replace("<!-- s10:end -->\n", "<!-- s10:end -->\n" + verify_block() + "\n", 1)
    doc.write_text(content)


if __name__ == "__main__":
    main()
