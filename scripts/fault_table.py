"""docs/faults.md from real runs: `python scripts/fault_table.py [TEST ...]` (as root: it mounts
tmpfs).

Runs the fault tier (tests/test_faults.py, the search's fault tests in
tests/test_search_faults.py and tests/test_search_postgres.py), or the TESTs named (pytest node
ids), with `PROJECT_FAULT_TABLE` set; each test records a row of what the struck run did. The
rows are kept in docs/fault_rows.jsonl (a test's new row replaces its old one, so one test can be
measured again alone) and become the table. `--rows FILE` takes rows recorded before instead.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_faults.py", "tests/test_search_faults.py", "tests/test_search_postgres.py"]
ROWS = ROOT / "docs" / "fault_rows.jsonl"  # every row of the table, as the tests recorded it
PLACES = {
    "first_checkpoint": "the first checkpoint (end of epoch 0)",
    "periodic_last_ckpt": "a periodic `last.ckpt` (`every_n_train_steps`)",
    "tensorboard_events": "TensorBoard's event file (mid-epoch curves)",
    "metrics_json": "`metrics.json` (end of fit)",
    "predictions_csv": "`predictions.csv` (`predict`)",
    "search_journal_worker": "the search's journal: the worker's heartbeat (trial 0 training)",
    "search_journal_reporter": "the search's journal: trial 0's reporter (its first validation)",
    "search_database": "the search's PostgreSQL server (while trial 1 runs)",
}
FAULTS = {
    "disk_full": "disk full (ENOSPC)",
    "read_only": "read-only remount (EROFS)",
    "no_permission": "`chmod -R a-w` (EACCES)",
    "server_restart": "PostgreSQL restarted",
}


def yes(value: bool) -> str:
    return "yes" if value else "**no**"


def seconds(row: dict) -> str:
    """Bold when a struck run took longer than 30 s to exit (a restart's row: the whole search)."""
    late = row["seconds"] >= 30 and row["fault"] != "server_restart"
    return f"**{row['seconds']}**" if late else str(row["seconds"])


def short(test: str) -> str:
    """`tests/test_faults.py::test_x[place-fault]` as `test_faults.py [place-fault]`."""
    path, _, name = test.partition("::")
    case = name[name.find("[") :] if "[" in name else ""
    return f"`{Path(path).name}` `{case or name}`"


def render(rows: list[dict], source: str) -> str:
    order = {p: k for k, p in enumerate(PLACES)}
    rows = sorted(rows, key=lambda r: (order.get(r["place"], 99), list(FAULTS).index(r["fault"])))
    when = " to ".join(sorted({min(r["date"] for r in rows), max(r["date"] for r in rows)}))
    lines = [
        "# Faults: what a run does when the machine fails it",
        "",
        f"{source}on {when}, on {platform.node()}: 2 cores shared with other work, so the",
        "seconds are loose upper bounds (over the 30 s the tests allow: in bold). The faults are",
        "real, on a tmpfs: filled until the kernel says ENOSPC, remounted read-only, or the run",
        "folder made unwritable for a process without root's override (`setpriv`,",
        "tests/faults.py). The fault strikes just before the run writes the place",
        "(tests/fault_point.py chooses the moment, nothing else; the search's journal is struck",
        "once trial 0 has trained a step, and a full journal disk is filled with the journal",
        "ending on a block boundary: tests/test_search_faults.py).",
        "",
        "- *seconds*: from the fault to the process's exit;",
        "- *the error line*: as printed (`$TMP`: the test's temporary folder);",
        "- *intact*: every checkpoint the run had when struck is byte-identical afterwards, and no",
        "  partial file is left;",
        "- *resumed = uninterrupted*: once the fault is removed, `fit -c RUN/config.yaml",
        "  --ckpt_path last` ends with bitwise the weights of a run never struck (a run struck",
        "  before its first checkpoint starts again; `predict` is rerun and writes the same file;",
        "  a search is rerun and finishes its study; for a database restart, *seconds* is until",
        "  the search ended, and *resumed* means the study finished with no trial lost).",
        "",
        "| where it struck | fault | exit | seconds | the error line | intact | resumed = "
        "uninterrupted | test (case) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        error = row["error"].replace("|", "\\|")
        lines.append(
            f"| {PLACES.get(row['place'], row['place'])} | {FAULTS.get(row['fault'], row['fault'])}"
            f" | {row['code']} | {seconds(row)} | `{error}` | {yes(row['intact'])} | "
            f"{yes(row['resumed_same'])} | {short(row['test'])} |"
        )
    tests = sorted({row["test"].split("[")[0] for row in rows})
    lines += ["", "The tests (each case is one parameter of one of them):", ""]
    lines += [f"- `{test}`" for test in tests]
    lines += [
        "",
        "A DDP rank or a DataLoader worker killed outright: see the rows the distributed tests add",
        "below, when present.",
        "",
    ]
    return "\n".join(lines)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tests", nargs="*", default=TESTS, help="pytest node ids to run")
    parser.add_argument("--rows", type=Path, help="take these recorded rows, run nothing")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "faults.md")
    args = parser.parse_args()
    source = (
        "Rows recorded by the tests below (each row by its test, run with `PROJECT_FAULT_TABLE`"
        " set;\nall rows in docs/fault_rows.jsonl), written by `python scripts/fault_table.py`\n"
    )
    if args.rows is None:
        rows_file = Path(tempfile.mkdtemp()) / "rows.jsonl"
        env = {**os.environ, "PROJECT_FAULT_TABLE": str(rows_file), "PYTHONPATH": str(ROOT)}
        pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.tests]
        finished = subprocess.run(pytest, cwd=ROOT, env=env)
        if not rows_file.exists():
            sys.exit(f"no rows recorded (pytest exit {finished.returncode})")
    else:
        rows_file = args.rows
    new = read_rows(rows_file)
    measured = {row["test"] for row in new}
    kept = [row for row in read_rows(ROWS) if row["test"] not in measured] if ROWS.exists() else []
    rows = kept + new
    ROWS.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args.out.write_text(render(rows, source))
    print(f"{len(new)} rows measured, {len(kept)} kept -> {ROWS}, {args.out}")


if __name__ == "__main__":
    main()
