"""The reference reproduction report (docs/reproduction/): the verdict rule, the claims read from small
synthetic stage outputs, "not run" lines for missing studies, metrics.json, and the reference weights
materialised for the `train=skip` path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from robex.models.io import REFERENCE_DIR, REFERENCE_STAGE_NAMES, materialize_reference_models
from robex.report.build import load_paper_reference
from robex.report.claims import NOT_REPRODUCED, NOT_RUN, NOT_TESTABLE, REPRODUCED, SAME_DIRECTION, Claim
from robex.report.reproduction import build_reproduction, rising, write_reproduction
from robex.utils.errors import RobexError

REFERENCE = load_paper_reference()
MANIFEST = json.loads((REFERENCE_DIR / "manifest.json").read_text())


# ---------------------------------------------------------------- the verdict rule
def test_value_verdicts_follow_the_documented_rule():
    assert Claim("001", "a", "", 0.8902, 0.87).verdict == REPRODUCED  # within 0.05
    assert Claim("001", "a", "", 0.8902, 0.70, baseline=0.1).verdict == SAME_DIRECTION  # far, but above chance like the paper
    assert Claim("001", "a", "", 0.8902, 0.05, baseline=0.1).verdict == NOT_REPRODUCED  # below chance
    assert Claim("001", "a", "", 0.8902, 0.70).verdict == NOT_REPRODUCED  # far and no no-effect value to compare sides with
    assert Claim("001", "a", "", 0.8902, None).verdict == NOT_RUN
    assert Claim("001", "a", "", 0.8902, float("nan")).verdict == NOT_RUN
    assert Claim("001", "a", "", 0.8902, 0.89, testable=False, reason="no ImageNet").verdict == NOT_TESTABLE
    assert Claim("001", "a", "", None, 0.5).verdict == NOT_TESTABLE  # no paper number to compare with


def test_small_samples_widen_the_tolerance_by_two_standard_errors():
    """0.15 away from 0.5 is not reproduced on 10,000 pairs but is on 20 (2 SE = 0.22): an
    implementation that ignores the sample size fails the second, one that always adds it fails the first."""
    assert Claim("001", "a", "", 0.5, 0.65, n=10_000).verdict == NOT_REPRODUCED
    assert Claim("001", "a", "", 0.5, 0.65, n=20).verdict == REPRODUCED
    # percentages: the same on the percent scale
    assert Claim("002", "a", "", 50.0, 65.0, percent=True, abs_tol=5.0, n=20).verdict == REPRODUCED
    assert Claim("002", "a", "", 50.0, 65.0, percent=True, abs_tol=5.0, n=10_000).verdict == NOT_REPRODUCED


def test_log_scale_compares_factors_and_sides_of_one():
    assert Claim("003", "t", "", 2260.0, 900.0, scale="log", baseline=1.0).verdict == REPRODUCED  # factor 2.5 < 3
    assert Claim("003", "t", "", 2260.0, 238.0, scale="log", baseline=1.0).verdict == SAME_DIRECTION  # factor 9.5, still > 1
    assert Claim("003", "t", "", 2260.0, 0.5, scale="log", baseline=1.0).verdict == NOT_REPRODUCED  # faster than Grad-CAM


def test_profiles_and_yes_no_claims():
    paper = [-0.3, 0.0, 0.3]
    assert Claim("001", "q", "", paper, [-0.28, 0.001, 0.33], kind="profile").verdict == REPRODUCED
    assert Claim("001", "q", "", paper, [-0.5, -0.002, 0.6], kind="profile").verdict == SAME_DIRECTION
    assert Claim("001", "q", "", paper, [0.2, 0.0, 0.3], kind="profile").verdict == NOT_REPRODUCED  # a sign flips
    assert Claim("000", "h", "", True, True, kind="holds").verdict == REPRODUCED
    assert Claim("000", "h", "", True, False, kind="holds").verdict == NOT_REPRODUCED
    assert Claim("000", "h", "", False, False, kind="holds").verdict == NOT_REPRODUCED  # the paper's own table must show it
    assert rising([87.1, 92.5, 99.3]) and rising([100.0, 100.0, 100.0])
    assert not rising([4.2, 4.2, 4.2]) and not rising([90.0, 80.0, 95.0]) and rising([1.0, None]) is None


# ---------------------------------------------------------------- synthetic reference outputs
def _csv(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def _json(payload: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


def _sections(root: Path) -> dict:
    return {"train": {"dir": str(root / "train"), "experiment": "robex-train", "models": ["cifar_cnn", "uncommitted_model"]},
            "attack": {"dir": str(root / "attack"), "experiment": "robex-attack"},
            "lrp_study": {"dir": str(root / "lrp"), "experiment": "robex-lrp_study"},
            "explain": {"dir": str(root / "explain"), "experiment": "robex-explain",
                        "paper_backbones": {"cifar_cnn": "AlexNet", "resnet18_cifar": "ResNet-50"}},
            "verify": {"dir": str(root / "verify"), "experiment": "robex-verify"}}


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    root = tmp_path / "reference"
    _json({"test/acc": 0.87, "parameters": 308394.0}, root / "train" / "cifar_cnn" / "metrics.json")
    tables = root / "lrp" / "statistics" / "tables"
    _csv(pd.DataFrame({"quantity": ["originals (correctly classified)", "adversarials", "success rate", "target probability q0.01"],
                       "ours": [500, 4400, 0.9778, 0.40], "paper": [8902, 77402, 0.9661, 0.9337]}), tables / "attack_summary.csv")
    _csv(pd.DataFrame({"rule": ["alpha_beta_1", "alpha_beta_1"], "batchnorm": ["layer", "merge"], "selection": ["top1_in_adv_top1pct"] * 2,
                       "share": [0.30, 0.76], "pairs": [4400, 4400]}), tables / "table5_ranking_shares.csv")
    levels = REFERENCE["lrp"]["quantile_levels"]
    _csv(pd.DataFrame({"quantile": levels, "alpha_beta_1 [layer]": REFERENCE["lrp"]["table3_adversarial_quantiles"]["alpha_beta_1"]}),
         tables / "table3_adversarial_quantiles.csv")
    _json({"images": 500}, root / "attack" / "metrics.json")  # filled below per attack
    attack = {"DFC.fooling_pct": 100.0, "DFC.rho_2": 0.01, "DFC.images": 500, "PGDC.fooling_pct": 97.0, "PGDC.rho_2": 0.03, "PGDC.images": 500,
              "DFF.rho_2": 0.001}  # a fine-level attack less perceptible than DFC must not enter Table I's ordering
    for eps, fooling in ((10, 75.0), (20, 90.0), (40, 99.0)):
        attack.update({f"LRPC eps={eps} (working).fooling_pct": fooling, f"LRPC eps={eps} (working).rho_2": 0.04, f"LRPC eps={eps} (working).images": 500})
    _json(attack, root / "attack" / "metrics.json")
    metrics = ["Avg Drop ↓", "Avg Increase ↑", "Coherency ↑", "Insertion ↑", "Deletion ↓"]
    alexnet = REFERENCE["lots"]["table_5_2"]["backbones"]["AlexNet"]
    _csv(pd.DataFrame([{"Model": "cifar_cnn", "Method": m, **dict(zip(metrics, v))} for m, v in alexnet.items()]),
         root / "explain" / "tables" / "table_5_2_methods.csv")
    _csv(pd.DataFrame({"Method \\ Model": ["Grad-CAM", "LOTS"], "cifar_cnn": [2.0, 4000.0]}), root / "explain" / "tables" / "table_5_3_ms_per_image.csv")
    rows = []
    for defense, scale in (("none", 1.0), ("pgd", 3.0)):
        for image in range(3):
            for variant, factor in (("cegis-sensitivity", 1.0), ("binary", 0.5)):
                rows.append({"defense": defense, "image": image, "variant": variant, "size": scale * factor,
                             **{f"eps_{d}": scale * factor * (0.05 - 0.01 * d) for d in range(4)}})
    _csv(pd.DataFrame(rows), root / "verify" / "per_image.csv")
    return root


def _by_key(reproduction) -> dict:
    return {f"{c.work}.{c.key}": c for c in reproduction.claims}


def test_claims_are_read_from_the_stage_files_and_decided(outputs: Path):
    claims = _by_key(build_reproduction(_sections(outputs), REFERENCE, MANIFEST, REFERENCE_STAGE_NAMES, {}))
    accuracy = claims["001.cifar_cnn.test_acc"]
    assert (accuracy.paper, accuracy.ours, accuracy.verdict) == (0.8902, 0.87, REPRODUCED)
    assert claims["001.lbfgs.success_rate"].verdict == REPRODUCED
    assert claims["001.lbfgs.target_probability_q0.01"].verdict == NOT_REPRODUCED
    # the [layer] row, not the [merge] one (0.76 would be "reproduced"); 0.30 is far above chance 0.01
    ranking = claims["001.ranking.alpha_beta_1.top1_in_adv_top1pct"]
    assert (ranking.ours, ranking.verdict) == (0.30, SAME_DIRECTION)
    assert claims["001.table3_adversarial_quantiles.alpha_beta_1"].verdict == REPRODUCED  # identical quantiles
    assert claims["001.table4_original_quantiles.alpha_beta_1"].verdict == NOT_RUN  # no Table 4 file
    assert claims["002.LRPC eps=10 (working).fooling"].verdict == SAME_DIRECTION  # 75 vs 87.1: tolerance 5 + 2 SE (3.0 points at 500 images)
    assert claims["002.LRPC eps=40 (working).fooling"].verdict == REPRODUCED
    assert claims["002.DFC.least_perceptible"].verdict == REPRODUCED  # 0.01 < 0.03 < 0.04, as in the paper's Table I
    assert claims["002.LRPC (working).fooling_rises"].verdict == REPRODUCED
    assert claims["002.LRPF eps=10.fooling"].verdict == NOT_RUN  # no fine-level numbers in this metrics.json
    assert claims["002.imagenet_vgg16"].verdict == NOT_TESTABLE
    assert claims["003.cifar_cnn.random_cam_worst"].verdict == REPRODUCED
    ordering = claims["003.cifar_cnn.method_ordering"]
    assert ordering.ours == pytest.approx(1.0) and ordering.verdict == REPRODUCED  # the thesis' own numbers: same order
    assert claims["003.cifar_cnn.lots_gradcam_time_ratio"].ours == pytest.approx(2000.0)
    assert claims["003.cifar_cnn.lots_gradcam_time_ratio"].verdict == REPRODUCED  # 2000 vs 2260
    assert claims["003.zero_target_best_coherency"].verdict == NOT_RUN
    assert claims["000.pgd_most_robust"].verdict == REPRODUCED
    assert claims["000.cegis_vs_binary"].verdict == REPRODUCED
    assert claims["000.none.eps_shrinks_with_distance"].verdict == REPRODUCED


def test_eps_shape_is_judged_on_the_sensitivity_variant_not_the_fixed_weights(outputs: Path):
    """The fixed cutting weights shrink far layers by construction: a profile that falls only under
    cegis-fixed while it rises under cegis-sensitivity is "not reproduced"."""
    verify = pd.read_csv(outputs / "verify" / "per_image.csv")
    rising = verify[verify["variant"] == "cegis-sensitivity"].copy()
    for d in range(4):
        rising[f"eps_{d}"] = 0.01 * (d + 1)
    falling = rising.assign(variant="cegis-fixed", **{f"eps_{d}": 0.05 - 0.01 * d for d in range(4)})
    pd.concat([falling, rising]).to_csv(outputs / "verify" / "per_image.csv", index=False)
    claims = _by_key(build_reproduction(_sections(outputs), REFERENCE, MANIFEST, REFERENCE_STAGE_NAMES, {}))
    assert claims["000.none.eps_shrinks_with_distance"].verdict == NOT_REPRODUCED


def test_binary_search_rows_may_come_from_their_own_folder(outputs: Path):
    verify = pd.read_csv(outputs / "verify" / "per_image.csv")
    _csv(verify[verify["variant"] == "binary"], outputs / "verify_binary" / "per_image.csv")
    verify[verify["variant"] != "binary"].to_csv(outputs / "verify" / "per_image.csv", index=False)
    alone = _by_key(build_reproduction(_sections(outputs), REFERENCE, MANIFEST, REFERENCE_STAGE_NAMES, {}))
    assert alone["000.cegis_vs_binary"].verdict == NOT_RUN
    both = _by_key(build_reproduction(_sections(outputs), REFERENCE, MANIFEST, REFERENCE_STAGE_NAMES, {},
                                      extra_dirs={"verify": [str(outputs / "verify_binary")]}))
    assert both["000.cegis_vs_binary"].verdict == REPRODUCED and both["000.pgd_most_robust"].verdict == REPRODUCED
    (outputs / "verify" / "per_image.csv").unlink()  # the binary run alone is not the verify study
    assert _by_key(build_reproduction(_sections(outputs), REFERENCE, MANIFEST, REFERENCE_STAGE_NAMES, {},
                                      extra_dirs={"verify": [str(outputs / "verify_binary")]}))["000.pgd_most_robust"].verdict == NOT_RUN


def test_table_5_1_may_come_from_its_own_explain_run(outputs: Path):
    metrics = ["Avg Drop ↓", "Avg Increase ↑", "Coherency ↑", "Insertion ↑", "Deletion ↓"]
    rows = REFERENCE["lots"]["table_5_1"]["rows"]
    _csv(pd.DataFrame([{"Model": "cifar_cnn", "Target": t, **dict(zip(metrics, v))} for t, v in rows.items()]),
         outputs / "explain_targets" / "tables" / "table_5_1_lots_targets.csv")
    claims = _by_key(build_reproduction(_sections(outputs), REFERENCE, MANIFEST, REFERENCE_STAGE_NAMES, {},
                                        extra_dirs={"explain": [str(outputs / "explain_targets")]}))
    assert claims["003.zero_target_best_coherency"].verdict == REPRODUCED  # the thesis' own Table 5.1: zero is best
    assert "explain_targets" in claims["003.zero_target_best_coherency"].source


def test_wrong_orderings_are_not_reproduced(outputs: Path):
    """Swap the defenses' sizes and make LOTS cheaper than Grad-CAM: the yes/no claims must flip."""
    verify = pd.read_csv(outputs / "verify" / "per_image.csv")
    verify["defense"] = verify["defense"].map({"none": "pgd", "pgd": "none"})
    verify.loc[verify["variant"] == "binary", "size"] *= 10
    verify.to_csv(outputs / "verify" / "per_image.csv", index=False)
    _csv(pd.DataFrame({"Method \\ Model": ["Grad-CAM", "LOTS"], "cifar_cnn": [2.0, 1.0]}), outputs / "explain" / "tables" / "table_5_3_ms_per_image.csv")
    claims = _by_key(build_reproduction(_sections(outputs), REFERENCE, MANIFEST, REFERENCE_STAGE_NAMES, {}))
    assert claims["000.pgd_most_robust"].verdict == NOT_REPRODUCED
    assert claims["000.cegis_vs_binary"].verdict == NOT_REPRODUCED
    assert claims["003.cifar_cnn.lots_gradcam_time_ratio"].verdict == NOT_REPRODUCED


def test_missing_studies_give_not_run_lines_and_the_document_still_renders(tmp_path: Path):
    reproduction = build_reproduction(_sections(tmp_path / "nothing"), REFERENCE, MANIFEST, REFERENCE_STAGE_NAMES,
                                      {"001": [{"glob": "lrp_study:statistics/figures/*.png", "caption": "x"}]})
    assert {c.verdict for c in reproduction.claims} <= {NOT_RUN, NOT_TESTABLE}
    assert sum(c.verdict == NOT_RUN for c in reproduction.claims) > 30
    written = reproduction.write(tmp_path / "docs")
    text = (tmp_path / "docs" / "README.md").read_text()
    for work in ("000", "001", "002", "003"):
        assert f"## {work}:" in text
    assert "not run (`" in text and "## What was run" in text
    metrics = json.loads((tmp_path / "docs" / "metrics.json").read_text())
    # the models from the manifest even when no study ran
    assert metrics["cifar_cnn"]["test/acc"] == MANIFEST["cifar_cnn"]["test_metrics"]["test/acc"]
    assert metrics["claims"]["001.cifar_cnn.test_acc"]["verdict"] == NOT_RUN
    assert len(written) == 2  # README + metrics.json, no figures
    assert "| uncommitted_model | missing (not run)" in text  # an expected model that is not committed is listed, not dropped


def test_generated_readme_has_every_claim_once_with_paper_ours_and_verdict_and_copies_figures(outputs: Path, tmp_path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    (outputs / "verify" / "figures").mkdir(parents=True)
    plt.imsave(outputs / "verify" / "figures" / "eps_profiles.png", np.zeros((4, 4)))
    spec = {"output_dir": str(tmp_path / "docs" / "reproduction"), "manifest": str(REFERENCE_DIR / "manifest.json"),
            "stage_names": REFERENCE_STAGE_NAMES,
            "figures": {"000": [{"glob": "verify:figures/eps_profiles.png", "caption": "mean eps per layer"}]}}
    for model in ("double_mnist_a", "double_mnist_b"):  # two models' training_curves.png must not overwrite each other
        (outputs / "train" / model).mkdir(parents=True)
        plt.imsave(outputs / "train" / model / "training_curves.png", np.zeros((4, 4)))
    spec["figures"]["000"].append({"glob": "train:double_mnist_*/training_curves.png", "caption": "curves"})
    reproduction = write_reproduction(spec, _sections(outputs), REFERENCE)
    assert (tmp_path / "docs" / "reproduction" / "figures" / "000_double_mnist_a_training_curves.png").is_file()
    assert (tmp_path / "docs" / "reproduction" / "figures" / "000_double_mnist_b_training_curves.png").is_file()
    out = tmp_path / "docs" / "reproduction"
    text = (out / "README.md").read_text()
    assert "![mean eps per layer](figures/000_verify_eps_profiles.png)" in text and (out / "figures" / "000_verify_eps_profiles.png").is_file()
    table_lines = [line for line in text.splitlines() if line.startswith("| ") and line.rstrip().endswith("|")]
    for claim in reproduction.claims:
        matching = [line for line in table_lines if line.startswith(f"| {claim.text} ")]
        assert len(matching) == 1, claim.text
        assert claim.verdict in matching[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["claims"]["001.cifar_cnn.test_acc"] == {"paper": 0.8902, "ours": 0.87, "verdict": REPRODUCED}
    assert metrics["cifar_cnn"]["test/acc"] == 0.87  # the materialised model's metrics.json wins over the manifest
    with pytest.raises(RobexError, match="reproduction.manifest"):
        write_reproduction({**spec, "manifest": str(tmp_path / "none.json")}, _sections(outputs), REFERENCE)


# ---------------------------------------------------------------- weights -> outputs/reference/train (train=skip)
def test_materialize_copies_checked_weights_under_the_stage_names(tmp_path: Path):
    written = materialize_reference_models(tmp_path / "train")
    for name, entry in MANIFEST.items():
        stage_name = REFERENCE_STAGE_NAMES.get(name, name)
        assert written[stage_name].read_bytes() == (REFERENCE_DIR.parent / entry["file"]).read_bytes()
        metrics = json.loads((tmp_path / "train" / stage_name / "metrics.json").read_text())
        assert metrics == {k: v for k, v in entry["test_metrics"].items() if isinstance(v, (int, float))}
        provenance = json.loads((tmp_path / "train" / stage_name / "reference.json").read_text())
        assert provenance["sha256"] == entry["sha256"] and provenance["reference_model"] == name
    assert "double_mnist_none" in written  # verify's name for the thesis CNN without defense


def test_materialize_refuses_a_changed_file_and_writes_nothing_for_it(tmp_path: Path):
    weights = tmp_path / "weights"
    shutil.copytree(REFERENCE_DIR, weights)
    path = tmp_path / MANIFEST["cifar_cnn"]["file"]
    path.write_bytes(path.read_bytes()[:-10])  # truncated
    with pytest.raises(RobexError, match="SHA-256"):
        materialize_reference_models(tmp_path / "train", weights, ["cifar_cnn"])
    assert not (tmp_path / "train" / "cifar_cnn" / "model.pt").exists()


def test_study_runs_are_found_by_the_folder_they_wrote_not_by_name(tmp_path: Path):
    """Two explain runs share experiment and run name (Tables 5.2/5.3 and Table 5.1 in two folders): each
    study lists the run that wrote its folder; unfinished runs are left out."""
    import mlflow

    from robex.report.reproduction import run_minutes, runs_for_dir

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("robex-explain")
    ids = {}
    for folder, status in (("explain", "FINISHED"), ("explain_targets", "FINISHED"), ("explain", "KILLED")):
        run = client.create_run(experiment, run_name="cifar10-cifar_cnn")
        client.log_param(run.info.run_id, "output_dir", str(tmp_path / folder))
        client.set_terminated(run.info.run_id, status=status)
        ids.setdefault((folder, status), run.info.run_id)
    found = runs_for_dir(uri, "robex-explain", tmp_path / "explain")
    assert [r["run_id"] for r in found] == [ids[("explain", "FINISHED")]]
    assert [r["run_id"] for r in runs_for_dir(uri, "robex-explain", tmp_path / "explain_targets")] == [ids[("explain_targets", "FINISHED")]]
    assert runs_for_dir(uri, "robex-verify", tmp_path / "explain") == []
    assert run_minutes(uri, [ids[("explain", "FINISHED")]]) >= 0


def test_an_overwritten_run_into_the_same_folder_does_not_count_for_a_one_step_stage(tmp_path: Path):
    """An explain run on one backbone, then one on two backbones into the same folder (other run name):
    the folder holds only the second one's tables, so only it counts for the study's wall time. The LRP
    study's steps are separate runs with separate names, and all of them count."""
    import mlflow

    from robex.report.reproduction import runs_for_dir

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("robex-explain")
    ids = []
    for start, name in ((1_000, "cifar10-cifar_cnn"), (2_000, "cifar10-cifar_cnn+resnet18_cifar")):
        run = client.create_run(experiment, run_name=name, start_time=start)
        client.log_param(run.info.run_id, "output_dir", str(tmp_path / "explain"))
        client.set_terminated(run.info.run_id, status="FINISHED", end_time=start + 500)
        ids.append(run.info.run_id)
    assert [r["run_id"] for r in runs_for_dir(uri, "robex-explain", tmp_path / "explain", newest_only=True)] == [ids[1]]
    assert sorted(r["run_id"] for r in runs_for_dir(uri, "robex-explain", tmp_path / "explain")) == sorted(ids)
