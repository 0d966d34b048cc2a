"""How fast a stage answers ``--help`` and refuses a misspelled key (issue 14: target < 3 s on 2 cores).

For every console script (``robex-train`` ...) and for ``python -m robex.train``: wall-clock and CPU
(user + sys of the child) seconds of ``--help`` and of a typo (``trainer.max_epoch=2`` for train,
``foo=1`` for the others), median of ``--repeats`` runs, with the exit status and the error line.
The machine's CPU count and load average are recorded: other work on the shared cores slows the wall times.

    OMP_NUM_THREADS=1 python benchmarks/cli_latency.py --out docs/benchmarks/cli_latency.json
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _report import emit

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("prepare", "train", "attack", "lrp_study", "explain", "verify", "report")


def timed(command: list[str]) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    errors = [line for line in done.stderr.splitlines() if line.startswith("robex: error:")]
    return {"wall": wall, "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), "exit": done.returncode,
            "error": errors[0] if errors else None, "first_line": (done.stdout.strip().splitlines() or [""])[0]}


def median_of(command: list[str], repeats: int) -> dict:
    runs = [timed(command) for _ in range(repeats)]
    return {"command": " ".join(Path(command[0]).name if i == 0 else w for i, w in enumerate(command)),
            "wall_s": statistics.median(r["wall"] for r in runs), "cpu_s": statistics.median(r["cpu"] for r in runs),
            "exit": runs[-1]["exit"], "error": runs[-1]["error"], "first_line": runs[-1]["first_line"][:100]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    report: dict = {"cpu_count": os.cpu_count(), "load_average_before": os.getloadavg(), "repeats": args.repeats, "help": {}, "typo": {}}
    for stage in STAGES:
        script = str(bin_dir / f"robex-{stage.replace('_', '-')}")
        typo = "trainer.max_epoch=2" if stage == "train" else "foo=1"
        report["help"][stage] = median_of([script, "--help"], args.repeats)
        report["typo"][stage] = median_of([script, typo], args.repeats)
    report["help"]["python -m robex.train"] = median_of([sys.executable, "-m", "robex.train", "--help"], args.repeats)
    report["load_average_after"] = os.getloadavg()
    walls = [entry["wall_s"] for group in ("help", "typo") for entry in report[group].values()]
    report["max_wall_s"], report["max_cpu_s"] = max(walls), max(e["cpu_s"] for g in ("help", "typo") for e in report[g].values())
    report["all_under_3_s_wall"] = report["max_wall_s"] < 3.0
    report["typos_refused_with_one_line"] = all(e["exit"] == 1 and e["error"] for e in report["typo"].values())
    emit(report, args.out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
