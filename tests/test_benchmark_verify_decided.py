"""benchmarks/verify_decided.py's --partial files and verify_decided_merge.py: a run split over
processes (--skip-images) must add up to the same figures as one run over the same images."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(name):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def _row(model, image, milp_statuses):
    strategy = {"size": 0.1, "queries": 10, "search_size": 0.1, "refuted_share": 1.0, "maximality": ["refuted"], "answered_by": {"milp": len(milp_statuses)},
                "milp_queries": len(milp_statuses), "milp_decided": sum(s == "negative" for s in milp_statuses),
                "attack_seconds": 1.0, "bounds_seconds": 1.0, "milp_seconds": 1.0, "final": None}
    return {"model": model, "image": image, "cegis": strategy, "binary": {**strategy, "milp_queries": 0, "milp_decided": 0},
            "cegis_over_binary_queries": 0.5, "cegis_queries_to_binary_size": 5, "cegis_zero_where_binary_positive": False}


def _write_partial(path, images):
    """What run_model writes: per line one image and its model's rows so far *in this process*."""
    lines, process_rows = [], {}
    for process, model, image, statuses, replay_status in images:
        milp, replay = process_rows.setdefault((process, model), ([], []))
        milp += [{"status": s, "seconds": 1.0, "backend": "highs", "eps": [0.1]} for s in statuses]
        replay += [{"status": replay_status, "original": statuses[0], "backend": "highs", "replay_backend": b, "seconds": 1.0, "original_seconds": 1.0}
                   for b in ("highs", "bab")]
        lines.append(json.dumps({"row": _row(model, image, statuses), "milp": list(milp), "replay": list(replay)}))
    path.write_text("\n".join(lines) + "\n")


IMAGES = [  # (process, model, image, the image's MILP statuses, its replay status)
    (0, "a", 1, ["negative", "timeout"], "negative"),
    (0, "a", 2, ["timeout"], "timeout"),
    (0, "b", 1, ["negative"], "negative"),
    (1, "a", 3, ["negative", "negative", "timeout"], "negative"),  # a second process appending to the same file
    (2, "a", 4, ["timeout", "negative"], "timeout"),  # a third, right after the second with the same model
]


def test_a_partial_file_of_several_processes_keeps_every_process_rows(tmp_path):
    decided = _module("verify_decided")
    _write_partial(tmp_path / "p.jsonl", IMAGES)
    models = decided.read_partial(tmp_path / "p.jsonl")
    rows, milp, replay = models["a"]
    assert [r["image"] for r in rows] == [1, 2, 3, 4]
    assert [m["status"] for m in milp] == ["negative", "timeout", "timeout", "negative", "negative", "timeout", "timeout", "negative"]
    assert len(replay) == 2 * 4
    report = decided.summarise_partial(tmp_path / "p.jsonl")
    assert report["models"]["a"]["decided_share"] == pytest.approx(4 / 8)
    assert report["decided_share"] == pytest.approx(5 / 9)


def test_merging_split_runs_and_a_finished_report_gives_the_pooled_figures(tmp_path):
    decided, merge = _module("verify_decided"), _module("verify_decided_merge")
    _write_partial(tmp_path / "whole.jsonl", IMAGES)
    _write_partial(tmp_path / "first.jsonl", IMAGES[:1])
    _write_partial(tmp_path / "rest.jsonl", IMAGES[1:])
    whole = decided.summarise_partial(tmp_path / "whole.jsonl")
    (tmp_path / "first.json").write_text(json.dumps(decided.summarise_partial(tmp_path / "first.jsonl")))  # a finished report part
    sys.argv = ["merge", "--part", str(tmp_path / "first.json"), "--part", str(tmp_path / "rest.jsonl"), "--out", str(tmp_path / "m.json")]
    merge.main()
    merged = json.loads((tmp_path / "m.json").read_text())
    for key in ("decided_share", "decided_share_license_free", "milp_queries", "share_queries_without_milp", "maximality_refuted_share",
                "cegis_over_binary_queries", "license_free_replayed_queries"):
        assert merged[key] == pytest.approx(whole[key]), key
    assert merged["decided_share_license_free_by_backend"] == pytest.approx(whole["decided_share_license_free_by_backend"])
    assert merged["seconds_keys_cover"] == {"a": 3, "b": 1}  # seconds medians: the JSON-lines part only

    sys.argv = ["merge", "--part", str(tmp_path / "whole.jsonl"), "--part", str(tmp_path / "rest.jsonl"), "--out", str(tmp_path / "x.json")]
    with pytest.raises(SystemExit, match="overlap"):
        merge.main()


def test_two_limit_comparison_gives_each_image_its_own_milp_rows(tmp_path):
    """verify_decided_limits.py splits a --partial file's cumulative rows per image: an image gets what
    its line adds to the line before it of the same process, never another image's or process's rows."""
    limits = _module("verify_decided_limits")
    _write_partial(tmp_path / "p.jsonl", IMAGES)
    images = limits.per_image_milp(tmp_path / "p.jsonl")
    assert {key: [m["status"] for m in rows] for key, (_, rows) in images.items()} == {
        (model, image): statuses for _, model, image, statuses, _ in IMAGES}
    short = {key: value for key, value in images.items() if key != ("a", 4)}
    summary = limits.side_summary(short, sorted(short))
    assert (summary["milp_queries"], summary["decided"]) == (7, 4)
    assert summary["decided_by_backend"] == {"highs": {"queries": 7, "decided": 4}}
    # an image's first rows are its CEGIS search's (the fixture's binary searches ask no MILP): none is tagged binary
    assert summary["decided_by_strategy_and_backend"] == {"cegis": {"highs": {"queries": 7, "decided": 4}}, "binary": {"highs": {"queries": 0, "decided": 0}}}


def test_longer_limit_sample_holds_only_the_backends_time_outs_and_the_summary_counts_each_method_apart(tmp_path):
    """verify_longer_limits.py re-asks time-outs: a decided query, or another backend's time-out, in its
    sample would inflate what a longer limit seems to decide; the summary must not mix methods nor count
    an over-license query as undecided."""
    limits, longer = _module("verify_decided_limits"), _module("verify_longer_limits")
    mixed = IMAGES + [(3, "c", 5, ["timeout", "negative", "timeout"], "timeout")]
    _write_partial(tmp_path / "p.jsonl", mixed)
    images = limits.per_image_milp(tmp_path / "p.jsonl")
    images[("a", 1)][1][1]["backend"] = "gurobi"  # image a/1's time-out ran on gurobi
    images[("b", 1)][1][0]["backend"] = "gurobi"  # and image b/1's decided query
    every = longer.undecided_sample(images, "highs", 100, seed=0)
    expected = sorted((model, image, k) for _, model, image, statuses, _ in mixed for k, s in enumerate(statuses) if s == "timeout")
    assert [(q["model"], q["image"], q["position"]) for q in every] == [key for key in expected if key != ("a", 1, 1)]
    assert all(q["backend"] == "highs" and q["status"] == "timeout" for q in every)
    assert [(q["model"], q["image"], q["position"]) for q in longer.undecided_sample(images, "gurobi", 100, seed=0)] == [("a", 1, 1)]
    three = longer.undecided_sample(images, "highs", 3, seed=1)
    assert len(three) == 3 and three == longer.undecided_sample(images, "highs", 3, seed=1) and set(map(str, three)) <= set(map(str, every))

    rows = [{"method": "highs", "outcome": "unknown", "answered_by": "milp", "seconds": 60.0, "bound": 0.5, "best_found": -0.3},
            {"method": "highs", "outcome": "robust", "answered_by": "milp", "seconds": 12.0, "bound": -0.1},
            {"method": "gurobi", "outcome": "over_license", "answered_by": None, "seconds": None, "bound": None},
            {"method": "gurobi", "outcome": "not_robust", "answered_by": "attack", "seconds": 2.0, "bound": None},
            {"method": "bab", "outcome": "unknown", "answered_by": "milp", "seconds": 60.0, "bound": 0.25},
            {"method": "bab", "outcome": "unknown", "answered_by": "milp", "seconds": 60.0, "bound": 0.75}]
    summary = longer.summarise(rows, ["highs", "gurobi", "bab"])
    assert summary["highs"] == {"queries": 2, "over_license": 0, "decided": 1, "robust": 1, "not_robust": 0, "answered_before_the_solver": 0,
                                "median_seconds_decided": 12.0, "undecided_solver_bounds": [0.5],
                                "undecided_gaps": [[-0.3, 0.5]]}
    assert (summary["gurobi"]["queries"], summary["gurobi"]["over_license"], summary["gurobi"]["decided"]) == (2, 1, 1)
    assert summary["gurobi"]["answered_before_the_solver"] == 1 and summary["gurobi"]["undecided_solver_bounds"] == []
    assert summary["bab"]["decided"] == 0 and summary["bab"]["median_seconds_decided"] is None
    assert summary["bab"]["undecided_solver_bounds"] == [0.25, 0.75]
