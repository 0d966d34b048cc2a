"""Stage `report`: every table of the four works with our numbers next to the papers', key figures,
the MLflow runs that produced each section, the trained models' test metrics and the git commit.

    python -m robex.report                 # writes outputs/report/README.md (+ tables/, figures/)
    python -m robex.report strict=true     # fail if a stage has not run

Logged to MLflow (experiment ``robex-report``) as artifacts. Library: ``robex.report`` (one module per section).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from robex.utils.hydra import CONFIG_PATH, job_output_dir, log, run_stage


def run(cfg: DictConfig) -> dict[str, float]:
    import mlflow

    from robex.report.build import build_report, git_dirty, load_paper_reference
    from robex.schemas import check
    from robex.tracking import log_metrics, mlflow_run, resolve_tracking_uri
    from robex.tracking.mlflow_utils import git_commit
    from robex.utils.errors import RobexError
    from robex.utils.io import staged_directory

    check(cfg)  # the schema's range checks (keys and types were checked at composition)
    report = build_report(OmegaConf.to_container(cfg.sections, resolve=True), load_paper_reference(cfg.paper_reference),
                          git_commit=git_commit(), tracking_uri=resolve_tracking_uri(cfg.tracking.uri), git_dirty=git_dirty(),
                          max_table_rows=cfg.max_table_rows, figures_per_pattern=cfg.figures_per_pattern,
                          reference_report=cfg.reference_report)
    missing = report.missing()
    if missing and cfg.strict:
        listed = "; ".join(f"{key} (missing {', '.join(files) or 'outputs'})" for key, files in missing.items())
        raise RobexError(f"strict=true and these stages have not run: {listed}; run `dvc repro` or set strict=false")
    out_dir = report.final_dir = job_output_dir(cfg)
    with mlflow_run(cfg, experiment=cfg.tracking.experiment, run_name="report", tracking_uri=cfg.tracking.uri) as run, \
            staged_directory(out_dir) as staging:  # the folder appears at once: DVC never sees half a report
        written = report.write(staging, report_run_id=run.info.run_id)
        mlflow.set_tags({f"source_runs.{key}": ",".join(ids) or "none" for key, ids in report.run_ids().items()})
        metrics = {"sections_run": sum(s.ran for s in report.sections), "sections_not_run": len(missing),
                   "figures": len(written["figures"]), "tables": len(written["tables"])}
        if cfg.reproduction is not None:  # experiment=reference_report: docs/reproduction/ from the reference outputs
            from robex.report.reproduction import write_reproduction

            reproduction = write_reproduction(OmegaConf.to_container(cfg.reproduction, resolve=True), OmegaConf.to_container(cfg.sections, resolve=True),
                                              load_paper_reference(cfg.paper_reference), git_commit=git_commit(), git_dirty=git_dirty(),
                                              tracking_uri=resolve_tracking_uri(cfg.tracking.uri), report_run_id=run.info.run_id)
            metrics |= {f"claims_{verdict.replace(' ', '_')}": count for verdict, count in reproduction.metrics()["verdicts"].items()}
            mlflow.log_artifacts(cfg.reproduction.output_dir, artifact_path="reproduction")
        log_metrics(metrics)
        mlflow.log_artifacts(str(staging), artifact_path="report")
    for key in missing:
        log.warning("section %s: not run", key)
    log.info("report written to %s (%d sections, %d not run)", out_dir / "README.md", len(report.sections), len(missing))
    return {key: float(value) for key, value in metrics.items()}


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="report")
def main(cfg: DictConfig) -> dict[str, float]:
    return run_stage(run, cfg)


if __name__ == "__main__":
    main()
