"""Stage `report`: every table of the four works with our numbers next to the papers', key figures,
the MLflow runs that produced each section, the trained models' test metrics and the git commit.

    python -m robex.report                 # writes outputs/report/README.md (+ tables/, figures/)
    python -m robex.report strict=true     # fail if a stage has not run

Logged to MLflow (experiment ``robex-report``) as artifacts. Library: ``robex.report.build``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from robex.utils.io import publish_directory
from robex.utils.hydra import CONFIG_PATH, log, user_errors_exit


def _git_dirty() -> bool:
    try:
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                                timeout=10, cwd=Path(__file__).resolve().parent, check=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(status.stdout.strip())


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="report")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    import mlflow

    from robex.report.build import build_report, load_paper_reference
    from robex.tracking import log_metrics, mlflow_run, resolve_tracking_uri
    from robex.tracking.mlflow_utils import git_commit
    from robex.utils.errors import RobexError

    sections = OmegaConf.to_container(cfg.sections, resolve=True)
    reference = load_paper_reference(cfg.paper_reference)
    uri = resolve_tracking_uri(cfg.tracking.uri)
    report = build_report(sections, reference, git_commit=git_commit(), tracking_uri=uri, git_dirty=_git_dirty(),
                          max_table_rows=cfg.max_table_rows, figures_per_pattern=cfg.figures_per_pattern)
    missing = report.missing()
    if missing and cfg.strict:
        listed = "; ".join(f"{key} (missing {', '.join(files) or 'outputs'})" for key, files in missing.items())
        raise RobexError(f"strict=true and these stages have not run: {listed}; run `dvc repro` or set strict=false")

    out_dir = Path(cfg.output_dir)
    staging = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    with mlflow_run(cfg, experiment=cfg.tracking.experiment, run_name="report", tracking_uri=cfg.tracking.uri) as run:
        written = report.write(staging, report_run_id=run.info.run_id)
        mlflow.set_tags({f"source_runs.{key}": ",".join(ids) or "none" for key, ids in report.run_ids().items()})
        log_metrics({"sections_run": sum(s.ran for s in report.sections), "sections_not_run": len(missing),
                     "figures": len(written["figures"]), "tables": len(written["tables"])})
        mlflow.log_artifacts(str(staging), artifact_path="report")
    publish_directory(staging, out_dir)  # the folder appears at once: DVC never sees half a report
    for key in missing:
        log.warning("section %s: not run", key)
    log.info("report written to %s (%d sections, %d not run)", out_dir / "README.md", len(report.sections), len(missing))


if __name__ == "__main__":
    main()
