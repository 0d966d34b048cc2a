"""Tables I/II fidelity keys from a finished attack-stage run (``python -m robex.attack``); prints JSON.

Reads ``metrics.json`` of the stage's output folder and the model file, and names the numbers the
issue checks mechanically (``lrpc_eps10_fooling_pct`` = LRPC at eps 10 in the working
configuration), plus every Table I/II cell of both configurations:

    python benchmarks/c2f_tables.py --run outputs/attack/c2f_cifar/c2f_tables > docs/benchmarks/c2f_tables.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="outputs/attack/c2f_cifar/c2f_tables", help="the attack stage's output folder")
    parser.add_argument("--command", default="", help="the command that produced --run (recorded verbatim)")
    parser.add_argument("--model-note", default="", help="how the model was trained (recorded verbatim)")
    args = parser.parse_args()
    metrics = json.loads((Path(args.run) / "metrics.json").read_text())
    keys = ("fooling_pct", "rho_1", "rho_2", "rho_inf", "top_relevance_share", "mean_iterations", "seconds_per_image")
    columns = sorted({name.rsplit(".", 1)[0] for name in metrics if "." in name})
    table = {column: {key: metrics.get(f"{column}.{key}") for key in keys} for column in columns}

    def cell(column: str, key: str = "fooling_pct"):
        return table.get(column, {}).get(key)

    out = {
        "run": args.run, "command": args.command, "model": args.model_note,
        "attacked_images": metrics.get("attacked_images"),
        "clean_accuracy_split": metrics.get("clean_accuracy_split"),
        "clean_coarse_accuracy_split": metrics.get("clean_coarse_accuracy_split"),
        "lrpc_eps10_fooling_pct": cell("LRPC eps=10 (working)"),
        "lrpc_eps10_fooling_pct_paper_literal": cell("LRPC eps=10 (paper_literal)"),
        "lrpf_eps10_fooling_pct": cell("LRPF eps=10 (working)"),
        "pgdc_fooling_pct": cell("PGDC"),
        "columns": table,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
