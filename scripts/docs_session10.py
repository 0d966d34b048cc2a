"""The session-10 blocks of docs/explain.md and docs/verify.md, every number read from the JSONs they name.

    python scripts/docs_session10.py    # rewrites the blocks between <!-- s10: ... --> and <!-- s10:end -->
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _replace_block(doc: Path, text: str, anchor: str, before: bool) -> None:
    """Put ``text`` (a whole s10 block) before or after ``anchor``, replacing an earlier s10 block."""
    content = re.sub(r"<!-- s10:.*?<!-- s10:end -->\n\n?", "", doc.read_text(), flags=re.S)
    if anchor not in content:
        raise SystemExit(f"{doc} has no {anchor!r} to put the session-10 block beside")
    content = content.replace(anchor, text + "\n" + anchor if before else anchor + text + "\n", 1)
    doc.write_text(content)


def explain_block() -> str:
    d = json.loads((ROOT / "docs/benchmarks/lots_step_rules_s10.json").read_text())
    r, c = d["rules"], d["direction_change"]
    old = json.loads((ROOT / "docs/benchmarks/lots_step_rules_committed_weights.json").read_text())
    def p(row, key):
        v = row.get(key)
        return f"{v['mean']:.3f} / {v['min']:.3f}" if v else "-"
    rows = [("thesis rule, run on to τ (≤ 3,000 iterations)", "thesis_until_tau_3000_iterations"),
            ("thesis rule, α = 1/510, run on to τ (≤ 4,000)", "thesis_alpha_half_until_tau_4000_iterations"),
            ("backtracking, run on to τ (≤ 3,000)", "backtracking_until_tau_3000_iterations"),
            ("Heun-Euler adaptive step on the thesis rule's flow, tolerance 1/255 (≤ 3,000 passes)", "heun_euler_tol_1_255_until_tau_3000_passes"),
            ("heavy ball, momentum 0.5, α 1/255 (≤ 3,000)", "heavy_ball_momentum_0.5_alpha_1_255_until_tau_3000_passes"),
            ("heavy ball, momentum 0.9, α 1/255", "heavy_ball_momentum_0.9_alpha_1_255_until_tau_3000_passes"),
            ("heavy ball, momentum 0.9, α 2/255", "heavy_ball_momentum_0.9_alpha_2_255_until_tau_3000_passes"),
            ("heavy ball, momentum 0.9, α 4/255", "heavy_ball_momentum_0.9_alpha_4_255_until_tau_3000_passes")]
    out = ["<!-- s10: generated from docs/benchmarks/lots_step_rules_s10.json -->",
    "**Session 10: why no step rule can take longer steps along the thesis rule's path.** The thesis rule is",
    "explicit Euler on the flow dx/ds = −g/max|g| (g the input gradient of eq. 3.1, s the L-inf arc length) with",
    "step α. If that flow were smooth at a scale above α, an integrator with error control would follow the",
    "same path with longer steps and give the same map in fewer passes. It is not. Along the thesis",
    f"path (20 images, first {c['steps']} steps, `direction_change` in the JSON), the normalised direction",
    f"g/max|g| changes by a median {c['median_linf_change_of_direction']:.2f} in L-inf from one step to the next (2 is the",
    f"most it can), by more than 1 on {100 * c['share_of_steps_with_change_above_1']:.0f}% of steps, and a median {100 * c['median_share_of_pixels_flipping_sign']:.0f}% of the pixels' gradients",
    "change sign at every step. The path zig-zags at the scale of α itself. An integrator with error control confirms it:",
    f"the Heun-Euler pair at tolerance 1/255 accepts steps of {r['heun_euler_tol_1_255_until_tau_3000_passes']['mean_accepted_step_255']:.2f}/255 on average, no longer than α.",
    "Momentum (Polyak's heavy ball on the same normalised direction) averages the zig-zag out and reaches τ",
    f"on every image in {r['thesis_until_tau_3000_iterations']['mean_steps'] / r['heavy_ball_momentum_0.5_alpha_1_255_until_tau_3000_passes']['mean_steps']:.1f}-{r['thesis_until_tau_3000_iterations']['mean_steps'] / r['heavy_ball_momentum_0.9_alpha_4_255_until_tau_3000_passes']['mean_steps']:.1f}x fewer passes than the thesis rule, but along another path, hence to another map. Every rule is compared with the thesis rule",
    "run on to τ, and with the same run at α/2, whose distance from the first is the scale on which",
    "the thesis' own procedure fixes its map:",
    "",
    "| run (20 images; benchmark-only rules marked) | mean passes | within τ | Pearson to thesis at τ | to thesis at α/2, at τ |",
    "| --- | --- | --- | --- | --- |"]
    for label, key in rows:
        row = r[key]
        bench = " (benchmark only)" if "benchmark only" in row["step_rule"] else ""
        to_tau = "1 (itself)" if key == "thesis_until_tau_3000_iterations" else p(row, "map_pearson_to_thesis_until_tau")
        to_half = "1 (itself)" if key == "thesis_alpha_half_until_tau_4000_iterations" else ("-" if key == "thesis_until_tau_3000_iterations" else p(row, "map_pearson_to_thesis_alpha_half_until_tau"))
        out.append(f"| {label}{bench} | {row['mean_steps']:,} | {row['converged_pct']:.0f}% | {to_tau} | {to_half} |")
    out += ["",
    "(Pearson mean / min over images. The rules marked \"benchmark only\" are written in `benchmarks/lots_step_rules.py`, not in the",
    f"library. Command: `OMP_NUM_THREADS=1 {d['command']}`.)",
    "Halving α moves the thesis rule's own map at τ to a mean Pearson of "
    f"{r['thesis_alpha_half_until_tau_4000_iterations']['map_pearson_to_thesis_until_tau']['mean']:.2f}. No rule that ends sooner stays on its path. The one that",
    f"ends soonest (heavy ball at 4/255, {r['heavy_ball_momentum_0.9_alpha_4_255_until_tau_3000_passes']['mean_steps']:,} passes, still above the ~70 that ≤ 50x allows) keeps a mean Pearson of",
    f"{r['heavy_ball_momentum_0.9_alpha_4_255_until_tau_3000_passes']['map_pearson_to_thesis_until_tau']['mean']:.2f} to the thesis map. So the aim \"≤ 50x at equal maps\" cannot be met on this model by a step rule.",
    "What equal maps can mean here is \"as close as the thesis rule is to itself at α/2\". Backtracking meets that",
    f"({r['backtracking_until_tau_3000_iterations']['map_pearson_to_thesis_until_tau']['mean']:.2f} to the thesis at τ), at {r['backtracking_until_tau_3000_iterations']['mean_steps']:,} instead of {r['thesis_until_tau_3000_iterations']['mean_steps']:,} passes: {100 * (1 - r['backtracking_until_tau_3000_iterations']['mean_steps'] / r['thesis_until_tau_3000_iterations']['mean_steps']):.0f}% fewer.",
    "Today's run of session 7's rows (same command and weights) differs from session 7's JSON by up to",
    f"{max(abs(r[k]['map_pearson_to_thesis']['mean'] - old['rules'][k]['map_pearson_to_thesis']['mean']) for k in old['rules'] if k in r and 'map_pearson_to_thesis' in old['rules'][k]):.3f} in mean Pearson and",
    f"{max(abs(r[k]['mean_steps'] - old['rules'][k]['mean_steps']) for k in old['rules'] if k in r):.1f} in mean steps. The session-7 table above is from session 7's JSON; the cause of the difference was not looked into.",
    "<!-- s10:end -->", ""]
    return "\n".join(out)


def verify_block() -> str:
    by_backend = json.loads((ROOT / "docs/benchmarks/verify_decided_by_backend_s9.json").read_text())
    sizes = json.loads((ROOT / "docs/benchmarks/verify_query_sizes.json").read_text())
    limits_path = ROOT / "docs/benchmarks/verify_decided_limits.json"
    limits = json.loads(limits_path.read_text()) if limits_path.exists() else None
    S = by_backend["short"]
    sb = S["decided_by_strategy_and_backend"]
    def share(d): return f"{d['decided']} of {d['queries']} ({d['decided'] / d['queries']:.2f})" if d["queries"] else "-"
    thesis = {m: S["by_model"][m] for m in ("none", "l0", "pgd")}
    thesis_images = sum(model in thesis for model, _ in by_backend["images"])
    def pooled(backend):
        q = sum(v["decided_by_backend"].get(backend, {"queries": 0})["queries"] for v in thesis.values())
        d = sum(v["decided_by_backend"].get(backend, {"decided": 0})["decided"] for v in thesis.values())
        return {"queries": q, "decided": d}
    def pooled_strategy(strategy):
        return {k: sum(v["decided_by_strategy"][strategy][k] for v in thesis.values()) for k in ("queries", "decided")}
    g = sizes["groups"]
    def med(key, field): return f"{g[key][field]['median']:,.0f}"
    out = ["<!-- s10: generated from the JSONs named in it -->",
    "#### Where the undecided queries are (2026-12-02, session 10)",
    f"Session 9's raw parts (`docs/benchmarks/verify_decided_s9_parts/`, {thesis_images} thesis-CNN images and {len(by_backend['images']) - thesis_images} wide-CNN images, 5 s limit) split by",
    "the backend each MILP query went to and by search strategy. Command: the `command` of",
    "`docs/benchmarks/verify_decided_by_backend_s9.json` (`benchmarks/verify_decided_limits.py`, which gives each image its own rows of the",
    "cumulative `--partial` lines).",
    "",
    "| MILP queries decided (5 s) | Gurobi (fits the pip license) | HiGHS (exceeds it) | CEGIS | binary search |",
    "| --- | --- | --- | --- | --- |",
    f"| thesis CNN, {thesis_images} images | {share(pooled('gurobi'))} | {share(pooled('highs'))} | {share(pooled_strategy('cegis'))} | {share(pooled_strategy('binary'))} |"]
    for m in ("none", "l0", "pgd", "wide"):
        v = S["by_model"][m]
        out.append(f"| {m} | {share(v['decided_by_backend'].get('gurobi', {'queries': 0, 'decided': 0}))} | {share(v['decided_by_backend'].get('highs', {'queries': 0, 'decided': 0}))} | "
                   f"{share(v['decided_by_strategy']['cegis'])} | {share(v['decided_by_strategy']['binary'])} |")
    out += ["",
    f"What the queries are (`docs/benchmarks/verify_query_sizes.json`: each of the {sizes['queries']:,} thesis-CNN MILP queries of these parts rebuilt from",
    "its recorded eps: box, root linear bounds, the MILP the oracle passes on; median over queries):",
    "",
    "| backend, outcome | queries | open pixels | unstable ReLUs | variables | binaries |",
    "| --- | --- | --- | --- | --- | --- |"]
    for key, label in (("gurobi:decided", "Gurobi, decided"), ("gurobi:undecided", "Gurobi, time-out"), ("highs:decided", "HiGHS, decided"), ("highs:undecided", "HiGHS, time-out")):
        out.append(f"| {label} | {g[key]['queries']:,} | {med(key, 'open_pixels')} | {med(key, 'unstable_relus')} | {med(key, 'variables')} | {med(key, 'binaries')} |")
    resolved = sizes.get("resolved_with_highs", {}).get("queries", [])
    out += ["",
    "The queries are of two kinds. A box that opens a few hundred pixels (the digit's layers) fits Gurobi's license,",
    "and Gurobi decides about half of these in 5 s. A box that opens nearly all 4,096 pixels, so that the merged far band",
    "(distance >= 8) is open, has hundreds to about a thousand unstable ReLUs. It exceeds the license and goes to HiGHS,",
    "which decides almost none.",
    f"CEGIS grows every layer, so {sb['cegis']['highs']['queries']:,} of its {sb['cegis']['highs']['queries'] + sb['cegis']['gurobi']['queries']:,} MILP queries went to HiGHS (both CNNs).",
    f"Binary search (fixed cutting weights) sent {sb['binary']['gurobi']['queries']:,} of its {sb['binary']['highs']['queries'] + sb['binary']['gurobi']['queries']:,} to Gurobi.",
    f"On the queries of each strategy Gurobi decides {share(sb['cegis']['gurobi'])} for CEGIS and {share(sb['binary']['gurobi'])} for binary search.",
    "The decided share therefore measures the search's boxes as much as the verifier."]
    if resolved:
        decided = sum(r["status"] in ("optimal", "positive", "negative") for r in resolved)
        per_model = max(sum(r["model"] == m for r in resolved) for m in {r["model"] for r in resolved})
        out += [f"On a sample, a longer limit does not help: the first {per_model} HiGHS time-outs of each model ({len(resolved)} queries), re-solved by HiGHS",
                f"alone at {sizes['resolved_with_highs']['seconds']:.0f} s without a warm start: {decided} decided. Their dual bounds ended at "
                f"{min(r['dual_bound'] for r in resolved):.2f} to {max(r['dual_bound'] for r in resolved):.2f}, from root linear bounds of "
                f"{min(r['linear_bound'] for r in resolved):.2f} to {max(r['linear_bound'] for r in resolved):.2f}; a proof needs a bound below 0.",
                "(These re-solves shared the two cores with one other single-thread job; their 60 s are wall clock.)"]
    if limits:
        L, Sh = limits["long"], limits["short"]
        out += ["",
    f"**The stage's default limit (10 s) against the benchmark's 5 s, on the same {len(limits['images'])} images** ({_image_span(limits)};",
    f"`docs/benchmarks/verify_decided_limits.json`, command inside; the 10 s run's parts are {_parts()}, same",
    "settings as session 9's chunks except `--milp-time-limit 10`, one single-thread process beside one other single-thread job on the two",
"cores). Each search asks its own queries, so these are the verifier's figures on its own",
    "search's queries, as issue 11 defines them:",
    "",
    "| limit | MILP queries | decided | Gurobi | HiGHS | CEGIS | binary | mean size CEGIS / binary | increments refuted / unknown / robust (CEGIS; binary) |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, side in (("5 s", Sh), ("10 s", L)):
            inc = side["increments"]
            out.append(f"| {name} | {side['milp_queries']} | {side['decided_share']:.3f} | {share(side['decided_by_backend'].get('gurobi', {'queries': 0, 'decided': 0}))} | "
                       f"{share(side['decided_by_backend'].get('highs', {'queries': 0, 'decided': 0}))} | {share(side['decided_by_strategy']['cegis'])} | {share(side['decided_by_strategy']['binary'])} | "
                       f"{side['size_mean']['cegis']:.3f} / {side['size_mean']['binary']:.3f} | "
                       f"{inc['cegis']['refuted']} / {inc['cegis']['unknown']} / {inc['cegis']['robust']}; {inc['binary']['refuted']} / {inc['binary']['unknown']} / {inc['binary']['robust']} |")
    out += ["<!-- s10:end -->", ""]
    return "\n".join(out)


def _image_span(limits: dict) -> str:
    """"images 5-10 of each defense": the benchmark counts correctly classified test images from 0, and the 10 s run starts at 5."""
    per_model = {model: 0 for model, _ in limits["images"]}
    for model, _ in limits["images"]:
        per_model[model] += 1
    counts = set(per_model.values())
    if len(counts) != 1:
        return ", ".join(f"{count} images of {model}" for model, count in per_model.items())
    return f"images 5-{5 + counts.pop() - 1} of each defense"


def _parts() -> str:
    return ", ".join(f"`{path.relative_to(ROOT)}`" for path in sorted((ROOT / "docs/benchmarks/verify_decided_limits_parts").glob("*.jsonl")))


def status_line() -> str:
    """One sentence for docs/verify.md's status block: the issue's figure at the stage's default limit."""
    limits = json.loads((ROOT / "docs/benchmarks/verify_decided_limits.json").read_text())
    short, long = limits["short"], limits["long"]
    overall = json.loads((ROOT / "docs/benchmarks/verify_decided.json").read_text())
    return (f"<!-- s10-status -->At the stage's default MILP limit of {limits['limits_seconds']['long']:g} s, on {len(limits['images'])} of these images "
            f"({_image_span(limits)}, session 10), {long['decided']} of {long['milp_queries']} MILP queries are decided ({long['decided_share']:.3f}), "
            f"against {short['decided']} of {short['milp_queries']} ({short['decided_share']:.3f}) at {limits['limits_seconds']['short']:g} s on the same images: "
            f"these {len(limits['images'])} are easier than the {overall['images']}, whose share at {limits['limits_seconds']['short']:g} s is {overall['decided_share']:.3f} "
            "(details under \"Where the undecided queries are\" below).<!-- s10-status:end -->\n")


def main() -> None:
    doc = ROOT / "docs/verify.md"
    content = re.sub(r"<!-- s10-status -->.*?<!-- s10-status:end -->\n", "", doc.read_text(), flags=re.S)
    if "<!-- status:end -->" not in content:
        raise SystemExit(f"{doc} has no status block to add the default-limit figure to")
    doc.write_text(content.replace("<!-- status:end -->", status_line() + "<!-- status:end -->", 1))
    _replace_block(ROOT / "docs/explain.md", explain_block(), "For scale, the thesis reports LOTS at 1,152x", before=True)
    _replace_block(ROOT / "docs/verify.md", verify_block(), "<!-- s9:end -->\n", before=False)


if __name__ == "__main__":
    main()
