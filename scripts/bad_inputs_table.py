"""Generate docs/ux.md's table of bad inputs: every case of tests/test_bad_inputs.py with the one line
the stage actually printed (never typed by hand).

It runs the parametrised test with ``ROBEX_BAD_INPUTS_LOG`` set (the test appends, per case, the
arguments, the exit status and the ``robex: error:`` lines it saw), then writes the table between the
markers ``<!-- bad-inputs:begin -->`` / ``<!-- bad-inputs:end -->`` of docs/ux.md. Temporary paths
are shown as ``<tmp>``, ``<files>`` (the test's bad files), ``<data>`` (tiny prepared data), ``<port>``.
Cases marked ``xfail`` in the test (a message another owner still has to fix) are listed with that note.

    OMP_NUM_THREADS=1 python scripts/bad_inputs_table.py            # ~1-3 min on 2 cores
    python scripts/bad_inputs_table.py --log cases.jsonl            # re-render from an earlier log
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ux.md"
BEGIN, END = "<!-- bad-inputs:begin -->", "<!-- bad-inputs:end -->"


def cases() -> list[tuple[str, list[str], str, str]]:
    """(stage, raw arguments, expected fragment, xfail reason or "") of every case, in the test's order."""
    sys.path.insert(0, str(ROOT / "tests"))
    spec = importlib.util.spec_from_file_location("test_bad_inputs", ROOT / "tests" / "test_bad_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = []
    for case in module.CASES:
        values, marks = (case.values, case.marks) if hasattr(case, "values") else (case, ())
        reason = next((m.kwargs.get("reason", "") for m in marks if m.name == "xfail"), "")
        found.append((values[0], list(values[1]), values[2], reason))
    return found


def run_cases(log: Path) -> tuple[str, float]:
    env = {**os.environ, "ROBEX_BAD_INPUTS_LOG": str(log), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_bad_inputs.py",
                           "-k", "test_bad_input_gives_one_sentence"], cwd=ROOT, env=env, capture_output=True, text=True)
    outcome = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
    print(outcome, file=sys.stderr)
    return outcome, time.monotonic() - start


def _placeholders(text: str, fill: dict[str, str]) -> str:
    for key, value in sorted(fill.items(), key=lambda kv: -len(kv[1])):  # longest first: <files> inside <tmp>
        if value:
            text = text.replace(value, f"<{key}>")
    return text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(records: list[dict], all_cases: list[tuple[str, list[str], str, str]]) -> tuple[str, dict]:
    by_case = {(r["stage"], json.dumps(r["case"])): r for r in records}
    rows = ["| # | stage | command | exit | the one line printed (after `robex: error: `) |", "|---|---|---|---|---|"]
    summary = {"cases": len(all_cases), "recorded": 0, "exit_1_one_line": 0, "xfail": 0, "missing": []}
    for number, (stage, args, _expected, reason) in enumerate(all_cases, 1):
        record = by_case.get((stage, json.dumps(args)))
        # the test's `+env.NAME=value` is an environment variable of the command, not an override
        env = [a.removeprefix("+env.") for a in args if a.startswith("+env.")]
        shown_args = " ".join([*env, f"robex-{stage.replace('_', '-')}", *(a for a in args if not a.startswith("+env."))])
        shown_args = shown_args.replace("{", "<").replace("}", ">")
        if record is None:
            summary["missing"].append(f"{stage} {shown_args}")
            rows.append(f"| {number} | {stage} | `{_cell(shown_args)}` | - | (not run) |")
            continue
        summary["recorded"] += 1
        lines = [_placeholders(line.removeprefix("robex: error: "), record["fill"]) for line in record["errors"]]
        ok = record["code"] == 1 and len(lines) == 1 and not record["traceback"]
        summary["exit_1_one_line"] += ok
        message = lines[0] if len(lines) == 1 else f"{len(lines)} error lines" + (", a traceback" if record["traceback"] else "")
        if reason:
            summary["xfail"] += 1
            message += f" *(known gap, {reason})*"
        rows.append(f"| {number} | {stage} | `{_cell(shown_args)}` | {record['code']} | {_cell(message)} |")
    return "\n".join(rows), summary


def write_doc(table: str, header: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# User experience: errors, sweeps, kills and resumes\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN not in text:
        text += f"\n## Every bad-input case\n\n{BEGIN}\n{END}\n"
    before, rest = text.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    DOC.write_text(f"{before}{BEGIN}\n{header}\n\n{table}\n{END}{after}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", type=Path, help="render from this JSON-lines log instead of running the cases")
    args = parser.parse_args(argv)
    all_cases = cases()
    seconds, outcome = None, None
    if args.log:
        log = args.log
    else:
        log = Path(tempfile.mkdtemp(prefix="bad_inputs_")) / "cases.jsonl"
        outcome, seconds = run_cases(log)
        if not log.exists():
            print("bad_inputs_table: the test recorded no case", file=sys.stderr)
            return 1
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    table, summary = render(records, all_cases)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    header = (f"Generated by `python scripts/bad_inputs_table.py` (git {commit}{', uncommitted changes' if _dirty() else ''}): "
              f"{summary['recorded']} of {summary['cases']} cases of tests/test_bad_inputs.py run, {summary['exit_1_one_line']} "
              f"exit 1 with exactly one `robex: error:` line and no traceback, {summary['xfail']} marked as known gaps."
              + (f" pytest: `{outcome.strip('= ')}` in {seconds:.0f} s (a passed case also asserts exit 1, the expected text"
                 " and no MLflow run left RUNNING)." if outcome else ""))
    write_doc(table, header)
    print(json.dumps({**summary, "seconds": seconds, "doc": str(DOC.relative_to(ROOT))}, indent=2))
    return 0 if not summary["missing"] else 1


def _dirty() -> bool:
    out = subprocess.run(["git", "status", "--porcelain", "--", "src", "conf", "tests/test_bad_inputs.py"], cwd=ROOT,
                         capture_output=True, text=True).stdout
    return bool(out.strip())


if __name__ == "__main__":
    sys.exit(main())
