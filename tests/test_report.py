"""`robex.report` on fake stage outputs: paper values next to ours, figures, run ids, shards."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from conftest import REPO, run_cli, runs_by_status
from robex.report.build import build_report, load_paper_reference
from robex.utils.sharding import merge_shards

matplotlib.use("Agg")


def _png(path: Path, seed: int = 0) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, np.random.default_rng(seed).random((8, 8)))


def _csv(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def _finished_run(client, experiment: str, name: str, tags: dict | None = None, status: str = "FINISHED", history: dict | None = None,
                  params: dict | None = None) -> str:
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=name, tags=tags or {})
    for key, value in (params or {}).items():
        client.log_param(run.info.run_id, key, value)
    for key, values in (history or {}).items():
        for step, value in enumerate(values):
            client.log_metric(run.info.run_id, key, value, step=step)
    client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def _per_image_verify(images: list[int], size: float) -> pd.DataFrame:
    return pd.DataFrame([{"defense": "none", "image": i, "target": 3, "variant": "cegis-fixed", "size": size + i, "eps_0": 0.01 * i,
                          "eps_1": 0.02, "queries": 10, "share_without_milp": 0.5, "seconds": 2.0, "stop_reason": "tolerance",
                          "final_verdict": "robust"} for i in images])


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> dict:
    """Fake outputs of every stage (verify and explain sharded) and an MLflow store with their runs,
    built once (creating an MLflow store takes seconds); each test gets a copy."""
    import mlflow

    tmp_path = tmp_path_factory.mktemp("report_template")
    outputs = tmp_path / "outputs"
    train = outputs / "train"
    (train / "cifar_cnn").mkdir(parents=True)
    (train / "cifar_cnn" / "metrics.json").write_text(json.dumps({"test/acc": 0.6123, "test/loss": 1.25, "best_val": 0.6011, "parameters": 307936}))
    (train / "double_mnist_none").mkdir()
    (train / "double_mnist_none" / "metrics.json").write_text(json.dumps({"test/exact_set_acc": 0.9321, "test/loss": 0.2}))

    attack = outputs / "attack" / "c2f_cifar" / "c2f_tables"
    rows = ["rho_adv^2", "rho_adv^1", "rho_adv^inf", "Fooling(%)", "mean iterations", "seconds / image", "images"]
    _csv(pd.DataFrame({"Algorithm": rows, "LRPC eps=10": [0.0611, 0.0622, 0.0433, 29.17, 21.5, 0.5, 24.0],
                       "DFC": [0.0221, 0.0152, 0.0904, 100.0, 5.6, 0.02, 24.0]}), attack / "table1_coarse.csv")
    _csv(pd.DataFrame({"Algorithm": rows, "LRPF eps=10": [0.0505, 0.0465, 0.0436, 20.83, 24.1, 0.48, 24.0]}), attack / "table2_fine.csv")
    (attack / "metrics.json").write_text("{}")
    _png(attack / "figures" / "fig1_coarse_example0.png")
    _png(attack / "figures" / "fig2_fine_example0.png")

    lrp = outputs / "lrp_study" / "quick"
    _csv(pd.DataFrame({"quantile": [0.001, 0.5], "alpha_beta_1": [0.0123, 0.0456], "alpha_beta_1 (paper)": [0.0, 0.0181]}),
         lrp / "statistics" / "tables" / "table3_adversarial_quantiles.csv")
    _csv(pd.DataFrame({"rule": ["alpha_beta_1"], "selection": ["top1_in_adv_top1pct"], "share": [0.7777], "share (paper)": [0.7521], "pairs": [54]}),
         lrp / "statistics" / "tables" / "table5_ranking_shares.csv")
    _png(lrp / "statistics" / "figures" / "heatmaps_example_0.png")

    explain = outputs / "explain"
    metric_keys = ["average_drop", "average_increase", "coherency", "insertion", "deletion"]
    for shard, (offset, ms) in enumerate([(0.0, 10.0), (10.0, 40.0)]):
        per_image = [{"model": "cifar_cnn", "method": method, "target": "zero" if method == "lots" else "", "image": image, "label": 0,
                      **{key: offset + k + (5 if method == "lots" else 0) for k, key in enumerate(metric_keys)}}
                     for method in ("grad_cam", "lots") for image in range(2 + 2 * shard)]
        _csv(pd.DataFrame(per_image), explain / "shards" / f"shard{shard}" / "tables" / "per_image.csv")
        _csv(pd.DataFrame({"Method \\ Model": ["Grad-CAM", "LOTS"], "cifar_cnn": [ms, 100 * ms]}),
             explain / "shards" / f"shard{shard}" / "tables" / "table_5_3_ms_per_image.csv")
    _png(explain / "shards" / "shard0" / "figures" / "methods_cifar_cnn.png")

    verify = outputs / "verify"
    _csv(_per_image_verify([0, 1], 1.0), verify / "shards" / "0" / "per_image.csv")
    _csv(_per_image_verify([2], 1.0), verify / "shards" / "1" / "per_image.csv")
    _csv(_per_image_verify([7, 8, 9], 50.0), verify / "per_image.csv")  # an older unsharded run: ignored
    _png(verify / "shards" / "0" / "figures" / "heatmap_none_0.png")

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    ids = {
        "train": _finished_run(client, "robex-train", "cifar_cnn", params={"data.monitor": "val/acc"},
                               history={"val/acc": [0.3, 0.5, 0.6], "train/loss": [2.0, 1.5, 1.2], "val/loss": [1.9, 1.4, 1.3]}),
        "attack": _finished_run(client, "robex-attack", "c2f_cifar/c2f_tables"),
        "lrp": _finished_run(client, "robex-lrp_study", "quick-statistics"),
        "explain": _finished_run(client, "robex-explain", "cifar10-cifar_cnn"),
        "verify": _finished_run(client, "robex-verify", "verify-cegis-none"),
    }
    # newer runs that must not be picked: a sweep parent and a failed run
    ids["explain_parent"] = _finished_run(client, "robex-explain", "sweep x=1,2", tags={"robex.sweep_parent": "true"})
    ids["verify_failed"] = _finished_run(client, "robex-verify", "verify-broken", status="FAILED")
    return {"root": tmp_path, "ids": ids}


@pytest.fixture
def workspace(template, tmp_path: Path) -> dict:
    import shutil

    shutil.copytree(template["root"] / "outputs", tmp_path / "outputs")
    shutil.copyfile(template["root"] / "mlflow.db", tmp_path / "mlflow.db")
    return {"root": tmp_path, "outputs": tmp_path / "outputs", "uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "ids": template["ids"]}


def _sections(outputs: Path) -> dict:
    return {
        "train": {"dir": str(outputs / "train"), "experiment": "robex-train"},
        "attack": {"dir": str(outputs / "attack" / "c2f_cifar" / "c2f_tables"), "experiment": "robex-attack",
                   "run_names": ["c2f_cifar/c2f_tables"], "figures": ["figures/fig*_example0.png"]},
        "lrp_study": {"dir": str(outputs / "lrp_study" / "quick"), "experiment": "robex-lrp_study",
                      "run_names": ["quick-attack", "quick-statistics"], "figures": ["statistics/figures/heatmaps_example_0.png"]},
        "explain": {"dir": str(outputs / "explain"), "experiment": "robex-explain", "figures": ["figures/methods_*.png"],
                    "lots_target": "zero", "paper_backbones": {"cifar_cnn": "AlexNet"}},
        "verify": {"dir": str(outputs / "verify"), "experiment": "robex-verify", "figures": ["figures/heatmap_*.png"]},
    }


def test_merge_shards_concatenates_in_natural_order_and_prefers_shards(tmp_path: Path):
    for name, rows in (("2", [2]), ("10", [10, 11]), ("1", [1])):
        _csv(pd.DataFrame({"image": rows, "x": [float(r) for r in rows]}), tmp_path / "shards" / name / "per_image.csv")
    _csv(pd.DataFrame({"image": [99], "x": [0.0]}), tmp_path / "per_image.csv")
    (tmp_path / "shards" / "3").mkdir()  # a shard without the file is skipped
    merged = merge_shards(tmp_path, "per_image.csv", source_column="shard")
    assert merged["image"].tolist() == [1, 2, 10, 11]
    assert merged["shard"].tolist() == ["1", "2", "10", "10"]

    _csv(pd.DataFrame({"image": [5], "extra": ["a"]}), tmp_path / "shards" / "4" / "per_image.csv")
    assert merge_shards(tmp_path, "per_image.csv")["extra"].isna().sum() == 4  # columns are unioned

    single = tmp_path / "unsharded"
    _csv(pd.DataFrame({"image": [7]}), single / "per_image.csv")
    assert merge_shards(single, "per_image.csv")["image"].tolist() == [7]
    with pytest.raises(FileNotFoundError, match="per_image.csv"):
        merge_shards(tmp_path / "nothing", "per_image.csv")


def test_report_puts_ours_next_to_paper_copies_figures_and_lists_runs(workspace):
    outputs, ids = workspace["outputs"], workspace["ids"]
    report = build_report(_sections(outputs), load_paper_reference(), git_commit="abc123", tracking_uri=workspace["uri"])
    assert report.missing() == {}
    out = workspace["root"] / "report"
    written = report.write(out, report_run_id="r-1")
    text = (out / "README.md").read_text()

    assert "`abc123`" in text and "r-1" in text
    # C2F Table I: our LRPC eps=10 fooling next to the paper's 87.1, paper-only columns appended
    table1 = pd.read_csv(out / "tables" / "attack" / "table1_coarse.csv").set_index("Algorithm")
    assert table1.loc["Fooling(%)", "LRPC eps=10"] == pytest.approx(29.17)
    assert table1.loc["Fooling(%)", "LRPC eps=10 (paper)"] == pytest.approx(87.1)
    assert table1.loc["rho_adv^2", "PGDC (paper)"] == pytest.approx(0.0262)
    assert np.isnan(table1.loc["mean iterations", "DFC (paper)"])
    assert "29.17" in text and "87.1" in text and "0.0611" in text and "0.0294" in text
    # LRP tables are shown with the stage's own paper columns
    assert "0.7777" in text and "0.7521" in text and "0.0456" in text
    # LOTS Table 5.2 recomputed from the merged shards, against the thesis' AlexNet rows
    table52 = pd.read_csv(out / "tables" / "explain" / "table_5_2_cifar_cnn.csv").set_index("Method")
    # shard0 (2 images) has Grad-CAM avg drop 0, shard1 (4 images) has 10: mean over 6 images = 6.667
    assert table52.loc["Grad-CAM", "Avg Drop ↓"] == pytest.approx(40 / 6, abs=0.01)
    assert table52.loc["LOTS", "Avg Drop ↓"] == pytest.approx(5 + 40 / 6, abs=0.01)
    assert table52.loc["Grad-CAM", "Avg Drop ↓ (paper AlexNet)"] == pytest.approx(18.31)
    table53 = pd.read_csv(out / "tables" / "explain" / "table_5_3.csv").set_index("Method")
    assert table53.loc["Grad-CAM", "cifar_cnn (ours)"] == pytest.approx((2 * 10 + 4 * 40) / 6)  # weighted by images
    assert table53.loc["LOTS", "ResNet-50 (paper)"] == pytest.approx(40515.11)
    assert "18.31" in text and "25488.27" in text
    # verify: shards merged, the older top-level run ignored
    per_model = pd.read_csv(out / "tables" / "verify" / "per_model.csv")
    assert per_model["images"].tolist() == [3]
    assert per_model["size_mean"].tolist() == [pytest.approx(2.0)]
    assert "Merged 2 shards" in text
    # trained models: test metrics and the LRP paper's CNN accuracy
    assert "0.6123" in text and "0.9321" in text and "0.8902" in text

    # figures: copied from the stages (also from shard folders) plus training curves and merged size plot
    names = {path.name for path in written["figures"]}
    assert {"fig1_coarse_example0.png", "fig2_fine_example0.png", "heatmaps_example_0.png", "methods_cifar_cnn.png", "heatmap_none_0.png"} <= names
    assert any("training_curves" in name for name in names)
    for path in written["figures"]:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({path.relative_to(out).as_posix()})" in text

    # MLflow run ids of every section, never the sweep parent or the failed run
    for key in ("train", "attack", "lrp", "explain", "verify"):
        assert ids[key] in text
    assert ids["explain_parent"] not in text and ids["verify_failed"] not in text
    assert "not run" not in text.split("## Contents")[1].split("## Trained")[0]


def test_missing_stage_says_not_run(workspace):
    import shutil

    outputs = workspace["outputs"]
    shutil.rmtree(outputs / "verify")
    shutil.rmtree(outputs / "attack")
    sections = _sections(outputs)
    sections["train"]["models"] = ["cifar_cnn", "c2f_cifar"]  # c2f_cifar was never trained
    report = build_report(sections, load_paper_reference(), git_commit="abc", tracking_uri=workspace["uri"])
    assert set(report.missing()) == {"attack", "verify", "train"}
    assert report.missing()["train"] == [str(outputs / "train" / "c2f_cifar" / "metrics.json")]
    text = report.render_markdown()
    assert "| train     | incomplete |" in text and "| c2f_cifar | not run  |" in text
    verify_part = text.split("## Multi-label robustness")[1]
    assert "**Stage `verify`: not run.**" in verify_part and "python -m robex.verify" in verify_part
    assert "**Stage `attack`: not run.**" in text
    assert "0.0456" in text  # the other sections are still there


def test_cli_logs_report_to_mlflow_and_strict_fails(workspace, monkeypatch, capsys):
    import mlflow

    root, outputs, uri = workspace["root"], workspace["outputs"], workspace["uri"]
    common = [f"paths.output_dir={outputs}", f"paths.train_dir={outputs / 'train'}", f"hydra.run.dir={root / 'hydra'}",
              "sections.lrp_study.run_names=[quick-statistics]"]
    env = {"MLFLOW_TRACKING_URI": uri}
    done = run_cli("robex.report", *common, cwd=REPO, env_extra=env, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    readme = (outputs / "report" / "README.md").read_text()
    assert "87.1" in readme and workspace["ids"]["attack"] in readme
    assert (outputs / "report" / "figures" / "attack" / "fig1_coarse_example0.png").is_file()
    assert not (outputs / "report.tmp").exists()
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("robex-report")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].info.run_id in readme
    assert runs[0].data.tags["source_runs.attack"] == workspace["ids"]["attack"]
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id, "report")}
    assert {"report/README.md", "report/figures", "report/tables"} <= artifacts

    import shutil
    import sys

    from hydra.core.global_hydra import GlobalHydra

    from robex.stages.report import main

    # in-process (a second interpreter start costs ~10 s on a loaded machine)
    shutil.rmtree(outputs / "verify")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(sys, "argv", ["robex.report", *common, "strict=true"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    GlobalHydra.instance().clear()
    assert exit_info.value.code == 1
    stderr = capsys.readouterr().err
    assert "robex: error: strict=true" in stderr and "verify" in stderr and "per_image.csv" in stderr
    assert "RUNNING" not in runs_by_status(uri)
    assert (outputs / "report" / "README.md").read_text() == readme  # the previous report is untouched


def test_explain_tables_as_the_stage_writes_them(tmp_path: Path):
    """Unsharded explain outputs, written with the stage's own table functions."""
    from robex.explain.tables import lots_targets_table, methods_table, timing_table
    from robex.report.explain import build_section as explain_section

    def summary(base: float) -> dict:
        return {"average_drop": base, "average_increase": base + 1, "coherency": base + 2, "insertion": base + 3,
                "deletion": base + 4, "ms_per_image": 10 * base}

    summaries = {"cifar_cnn": {"grad_cam": summary(12.5), "lots": summary(30.25)}, "resnet18_cifar": {"hires_cam": summary(7.75)}}
    tables = tmp_path / "explain" / "tables"
    _csv(lots_targets_table({"zero": summary(31.5), "mean": summary(33.5)}, "cifar_cnn"), tables / "table_5_1_lots_targets.csv")
    _csv(methods_table(summaries), tables / "table_5_2_methods.csv")
    _csv(timing_table(summaries), tables / "table_5_3_ms_per_image.csv")
    spec = {"dir": str(tmp_path / "explain"), "paper_backbones": {"cifar_cnn": "AlexNet", "resnet18_cifar": "ResNet-50"}}
    section = explain_section(spec, load_paper_reference(), {"max_table_rows": 50})
    assert section.ran and section.missing == []

    table51 = section.tables["table_5_1"].set_index("Target")
    assert table51.loc["Zero F_t", "Avg Drop ↓"] == pytest.approx(31.5)
    assert table51.loc["Zero F_t", "Avg Drop ↓ (paper ResNet-50)"] == pytest.approx(11.31)
    assert np.isnan(table51.loc["Class F_t", "Avg Drop ↓"])  # a target we did not run keeps the paper row
    table52 = section.tables["table_5_2_resnet18_cifar"].set_index("Method")
    assert table52.loc["HiRes-CAM", "Coherency ↑"] == pytest.approx(9.75)
    assert table52.loc["HiRes-CAM", "Coherency ↑ (paper ResNet-50)"] == pytest.approx(95.19)
    assert list(section.tables["table_5_2_cifar_cnn"]["Method"][:2]) == ["Grad-CAM", "LOTS"]  # ours first, in our order
    table53 = section.tables["table_5_3"].set_index("Method")
    assert table53.loc["LOTS", "cifar_cnn (ours)"] == pytest.approx(302.5)
    assert table53.loc["SmoothGrad-CAM++", "DenseNet-121 (paper)"] == pytest.approx(1699.67)
    text = "\n".join(section.blocks)
    assert "302.5" in text and "1699.67" in text and "608.73" in text and "95.19" in text


def test_report_opens_with_what_was_run_and_keeps_tables_narrow_with_real_captions(workspace, monkeypatch):
    """Issue 14 item 9: sizes, models and accuracies first; no Markdown table wider than the limit;
    figure captions from the config (not file names); a link to the reference reproduction."""
    from robex.report.document import MAX_COLUMNS

    monkeypatch.chdir(workspace["root"])  # the project root: reference_report is relative to it
    sections = _sections(workspace["outputs"])
    sections["attack"]["captions"] = [{"glob": "figures/fig*_example0.png", "caption": "What the attack did"}]
    report = build_report(sections, load_paper_reference(), git_commit="abc123", reference_report="docs/reproduction/README.md")
    out = workspace["root"] / "outputs" / "report"
    report.final_dir = out
    report.write(out)
    text = (out / "README.md").read_text()
    opening = text.split("## Contents")[0]
    assert "## What was run" in opening
    assert "| cifar_cnn " in opening and "acc 0.612" in opening  # the model and its test accuracy
    assert "exact-set acc 0.932" in opening
    assert "3 test images per defense; cegis-fixed" in opening  # the verify study's size, from the merged shards
    assert "](../../docs/reproduction/README.md)" in opening  # relative to outputs/report/README.md
    for line in text.splitlines():
        if line.startswith("|"):
            assert line.count("|") - line.count("\\|") - 1 <= MAX_COLUMNS + 2, line  # escaped pipes are cell text
    assert "![What the attack did (fig1 coarse example0)](figures/attack/fig1_coarse_example0.png)" in text
    assert "*What the attack did (fig2 fine example0)*" in text


def test_wide_tables_split_into_parts_keeping_ours_beside_the_paper():
    from robex.report.tables import shorten_columns, split_wide

    rules = ["lrp0", "epsilon_0.01", "epsilon_1", "alpha_beta_1", "alpha_beta_2"]
    columns = {"quantile": [0.1, 0.5]}
    for rule in rules:
        for suffix in (" [layer]", " [merge]", " (paper)"):
            columns[rule + suffix] = [1.0, 2.0]
    frame, legend = shorten_columns(pd.DataFrame(columns))
    assert "αβ=1 L" in frame.columns and "ε=0.01 P" in frame.columns
    assert any(line.startswith("L = BatchNorm") for line in legend) and any(line.startswith("P = ") for line in legend)
    parts = split_wide(frame, max_columns=8)
    assert len(parts) == 3 and all(part.columns[0] == "quantile" and len(part.columns) <= 8 for part in parts)
    shown = [c for part in parts for c in part.columns[1:]]
    assert shown == list(frame.columns[1:])  # every column once, in order
    for part in parts:  # a rule's three columns never straddle two parts
        bases = [c.rsplit(" ", 1)[0] for c in part.columns[1:]]
        assert all(bases.count(b) == 3 for b in bases)
    assert len(split_wide(frame.iloc[:, :10], max_columns=8)) == 1  # two columns over: not split into a stub
    from robex.report.tables import markdown_table

    header = markdown_table(pd.DataFrame({"rule": ["x"], "|shift| q0.5": [1.0]})).splitlines()[0]
    assert "\\|shift\\| q0.5" in header and header.count("|") - header.count("\\|") == 3  # two cells, not four
    clash = pd.DataFrame({"a (paper)": [1], "a [paper]": [2]})
    assert list(shorten_columns(clash)[0].columns) == ["a (paper)", "a [paper]"]  # never merges two columns


def test_stage_with_experiment_reference_report_writes_the_reproduction_and_logs_it(workspace, monkeypatch):
    """The stage wiring: experiment=reference_report writes docs/reproduction/ (README + metrics.json)
    beside the report, inside the report's MLflow run (verdict counts as metrics, files as artifacts)."""
    import sys

    import mlflow
    from hydra.core.global_hydra import GlobalHydra

    from robex.stages.report import main

    root, outputs, uri = workspace["root"], workspace["outputs"], workspace["uri"]
    docs = root / "docs" / "reproduction"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(sys, "argv", ["robex.report", "experiment=reference_report", f"paths.output_dir={outputs}",
                                      f"paths.train_dir={outputs / 'train'}", f"hydra.run.dir={root / 'hydra'}", f"tracking.uri={uri}",
                                      f"sections.lrp_study.dir={outputs / 'lrp_study' / 'quick'}", f"reproduction.output_dir={docs}",
                                      "reproduction.extra_dirs={}"])
    try:
        main()
    except SystemExit as exit_info:  # hydra's main returns normally; a failure exits non-zero
        assert exit_info.code in (0, None)
    finally:
        GlobalHydra.instance().clear()
    text = (docs / "README.md").read_text()
    assert "## 001:" in text and "not run" in text  # the template has no LRP attack summary: "not run" lines, no crash
    metrics = json.loads((docs / "metrics.json").read_text())
    assert metrics["cifar_cnn"]["test/acc"] == 0.6123 and metrics["claims"]["001.cifar_cnn.test_acc"]["ours"] == 0.6123
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("robex-report").experiment_id])[0]
    assert run.info.status == "FINISHED" and run.info.run_id in text
    assert run.data.metrics["claims_not_run"] == metrics["verdicts"]["not run"] > 0
    assert {"reproduction/README.md", "reproduction/metrics.json"} <= {a.path for a in client.list_artifacts(run.info.run_id, "reproduction")}
