"""Library functions the Hydra stages call, used directly as from a notebook (no DictConfig)."""

import json
import random
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from robex.attacks.evaluation import attack_specs
from robex.explain.data import ImageSource
from robex.explain.methods import build_explainer, per_image_rows
from robex.lrp import tables as lrp_report
from robex.lrp.ranking import RankingShiftAccumulator
from robex.lrp.statistics import RelevanceDistribution
from robex.lrp.study import attack_all_pairs, attack_metrics, restore_accumulators, target_pairs
from robex.utils.errors import RobexError
from robex.utils.io import atomic_write_json, publish_directory
from robex.utils.runtime import resolve_device, seed_everything
from robex.verify.tables import eps_columns, per_model_table, summary_metrics


def test_resolve_device_and_seed_everything(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(RobexError, match="device='tpu' is not supported"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(RobexError, match=rf"device='{name}' was asked for but CUDA is not available; use device=cpu or device=auto"):
            resolve_device(name)
    draws = []
    for _ in range(2):
        seed_everything(3)
        draws.append((random.random(), float(np.random.rand()), float(torch.rand(1))))
    assert draws[0] == draws[1]


def test_target_pairs_cover_every_other_class():
    labels = torch.tensor([0, 3, 9])
    original, target = target_pairs(labels, 10)
    assert original.tolist() == [0] * 9 + [1] * 9 + [2] * 9
    for slot, label in enumerate(labels.tolist()):
        assert sorted(target[original == slot].tolist()) == [c for c in range(10) if c != label]


def test_attack_all_pairs_keeps_successes_and_reports_them():
    def fake_attack(images, targets):
        # succeeds on even target classes, with the target class as "probability" / 10
        success = targets % 2 == 0
        return SimpleNamespace(adversarial=images + 0.01, success=success, target_probability=targets.float() / 10,
                               iterations=torch.ones_like(targets), c=torch.ones(len(targets)), distance=torch.full((len(targets),), 4.0))

    originals = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    payload, seconds = attack_all_pairs(fake_attack, originals, torch.tensor([1, 2]), 4, 4, torch.device("cpu"))
    assert payload["pair_target"].tolist() == [2, 3, 0, 3, 0, 1]
    assert payload["adversarial_pairs"].tolist() == [0, 2, 4]
    assert payload["adversarials"].shape == (3, 3, 4, 4)
    metrics = attack_metrics(payload, max(seconds, 1e-6))
    assert metrics["attack/originals"] == 2 and metrics["attack/adversarials"] == 3
    assert metrics["attack/success_rate"] == pytest.approx(0.5) and metrics["attack/median_l2"] == pytest.approx(2.0)
    table = lrp_report.attack_summary_table(2, payload["pair_success"], payload["pair_target_probability"][payload["adversarial_pairs"]].numpy())
    assert table.set_index("quantity").loc["adversarials", "ours"] == 3
    assert table.set_index("quantity").loc["success rate", "paper"] == 0.9661  # paper_reference.yaml, Sect. 4.1
    assert table.set_index("quantity").loc["target probability q0.01", "paper"] == 0.9337
    assert metrics["attack/share_target_probability_above_0.9337"] == 0.0  # fake probabilities are <= 0.3


def test_lrp_report_tables_and_metrics_from_accumulators():
    generator = torch.Generator().manual_seed(0)
    distributions, rankings = {}, {}
    for batchnorm, shift in (("layer", 0.0), ("merge", 0.5)):
        distributions[batchnorm], rankings[batchnorm] = {}, {}
        for rule in ("lrp0", "alpha_beta_1"):
            by_kind = distributions[batchnorm][rule] = {kind: RelevanceDistribution() for kind in ("original", "adversarial")}
            for distribution in by_kind.values():
                distribution.update((torch.rand(4, 3, 8, 8, generator=generator) * 2 - 1 + shift).clamp(-1, 1))
            rankings[batchnorm][rule] = RankingShiftAccumulator(3 * 8 * 8)
            rankings[batchnorm][rule].update(torch.rand(4, 3, 8, 8, generator=generator), torch.rand(4, 3, 8, 8, generator=generator))
    summary = {"distributions": {b: {r: {k: d.state_dict() for k, d in by.items()} for r, by in rules.items()} for b, rules in distributions.items()},
               "rankings": {b: {r: a.state_dict() for r, a in rules.items()} for b, rules in rankings.items()}}
    distributions, rankings = restore_accumulators(summary)
    levels = lrp_report.paper_quantile_levels()
    tables = lrp_report.statistics_tables(distributions, rankings, levels, [0.5, 0.9])
    assert set(tables) == {"table3_adversarial_quantiles", "table4_original_quantiles", "relevance_summary", "relevance_by_sign",
                           "table5_ranking_shares", "ranking_shifts"}
    table3 = tables["table3_adversarial_quantiles"]
    # paper values from paper_reference.yaml (Table 3, alpha = 1 column), both treatments side by side
    assert list(table3["alpha_beta_1 (paper)"]) == [0.0, 0.0, 0.0001, 0.0017, 0.0181, 0.1353, 0.4758, 0.5960, 0.8526]
    assert list(tables["table4_original_quantiles"]["alpha_beta_1 (paper)"])[0] == -0.2043
    for batchnorm in ("layer", "merge"):
        column = table3[f"lrp0 [{batchnorm}]"]
        assert column.is_monotonic_increasing and column.between(-1, 1).all()
        expected = distributions[batchnorm]["lrp0"]["adversarial"].quantiles(levels)
        assert list(column) == expected
    assert (table3["lrp0 [merge]"] > table3["lrp0 [layer]"]).any()
    shares = tables["table5_ranking_shares"]
    assert set(shares["batchnorm"]) == {"layer", "merge"} and len(shares) == 2 * 2 * 6
    assert shares.set_index(["batchnorm", "rule", "selection"]).loc[("layer", "alpha_beta_1", "top1_in_adv_top10pct"), "share (paper)"] == 0.9672
    assert {"|shift| q0.5", "|shift| q0.9"} <= set(tables["ranking_shifts"].columns)
    metrics = lrp_report.statistics_metrics(distributions, rankings)
    assert metrics["relevance/layer/lrp0/original/mean"] == pytest.approx(distributions["layer"]["lrp0"]["original"].mean())
    assert metrics["relevance/merge/lrp0/original/negative_share"] == pytest.approx(distributions["merge"]["lrp0"]["original"].share("negative"))
    assert 0 <= metrics["ranking/merge/alpha_beta_1/top1_in_adv_top10pct"] <= 1


def test_verify_report_aggregates_rows():
    per_image = pd.DataFrame([
        {"defense": "none", "variant": "binary", "size": 1.0, "queries": 4, "share_without_milp": 0.5, "seconds": 1.0, "final_verdict": "robust", "eps_10": 0.1, "eps_2": 0.2},
        {"defense": "none", "variant": "binary", "size": 3.0, "queries": 6, "share_without_milp": 1.0, "seconds": 3.0, "final_verdict": "unknown", "eps_10": 0.1, "eps_2": 0.2},
    ])
    queries = pd.DataFrame({"answered_by": ["milp", "interval", "interval", "milp"], "milp_seconds": [2.0, None, None, 4.0]})
    per_model = per_model_table(per_image)
    assert per_model.loc[0, "size_mean"] == 2.0 and per_model.loc[0, "images"] == 2
    metrics = summary_metrics(per_image, queries, per_model)
    assert metrics["share_without_milp"] == 0.5 and metrics["milp_seconds_median"] == 3.0
    assert metrics["final_robust_share"] == 0.5 and metrics["size_mean.none.binary"] == 2.0
    assert eps_columns(per_image) == ["eps_2", "eps_10"]


def test_attack_specs_and_explain_helpers():
    suite = {"coarse": ["lrpc", "dfc"], "fine": ["pgdf"], "lrp_eps": [10, 20], "lrp": {"steps": 2}, "pgd": {"steps": 3}, "deepfool": {"steps": 4}}
    assert [spec["name"] for spec in attack_specs(suite)] == ["lrpc", "lrpc", "dfc", "pgdf"]
    assert attack_specs({"name": "lrpf", "eps": 20, "label": "lrpf_eps20"}) == [{"name": "lrpf", "eps": 20}]
    scores = SimpleNamespace(**{name: torch.tensor([1.0, 2.0]) for name in ("average_drop", "average_increase", "coherency", "insertion", "deletion")})
    rows = per_image_rows("cnn", "lots", scores, torch.tensor([4, 7]), "zero")
    assert rows[1] == {"model": "cnn", "method": "lots", "target": "zero", "image": 1, "label": 7, "average_drop": 2.0,
                       "average_increase": 2.0, "coherency": 2.0, "insertion": 2.0, "deletion": 2.0}
    with pytest.raises(ValueError, match="'nope' is unknown"):
        build_explainer("nope", torch.nn.Identity())
    with pytest.raises(ValueError, match="image data kind 'mnist' is not supported"):
        ImageSource("mnist")


def test_publish_directory_replaces_atomically(tmp_path):
    out, staging = tmp_path / "out", tmp_path / "out.tmp"
    out.mkdir()
    (out / "old.txt").write_text("old")
    atomic_write_json({"b": 1, "a": 2}, staging / "metrics.json")
    publish_directory(staging, out)
    assert not staging.exists() and not (out / "old.txt").exists() and not (tmp_path / "out.old").exists()
    assert list(json.loads((out / "metrics.json").read_text())) == ["a", "b"]
