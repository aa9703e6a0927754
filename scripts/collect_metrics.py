"""One table of many runs: the config keys that differ between them, then their metrics.json.

    python scripts/collect_metrics.py logs/gru                    # every run under logs/gru
    python scripts/collect_metrics.py logs/gru/slurm-1234_*       # the runs of one job array
    python scripts/collect_metrics.py logs/gru --csv sweep.csv    # also as CSV

Prints a markdown table, one row per run folder that holds a metrics.json.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import yaml

from project.runs import CONFIG, METRICS, finished_runs

# differ between any two runs without saying anything about them
RUN_BOOKKEEPING = {"trainer.default_root_dir", "trainer.logger.init_args.version"}


def flat(tree: object, prefix: str = "") -> dict[str, object]:
    """`{"a": {"b": 1}}` → `{"a.b": 1}`; lists stay whole."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    items: dict[str, object] = {}
    for key, value in tree.items():
        items.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return items


def table(runs: list[Path]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: run, the config keys whose values differ, then every metric."""
    configs = []
    for run in runs:
        path = run / CONFIG
        configs.append(flat(yaml.safe_load(path.read_text())) if path.exists() else {})
    keys = sorted({k for c in configs for k in c} - RUN_BOOKKEEPING)
    varying = [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]
    metrics = [json.loads((run / METRICS).read_text()) for run in runs]
    names = sorted({name for m in metrics for name in m})
    rows = []
    for run, config, values in zip(runs, configs, metrics, strict=True):
        row = [str(run)] + [str(config.get(k, "")) for k in varying]
        row += [f"{values[n]:.4f}" if n in values else "" for n in names]
        rows.append(row)
    return ["run", *varying, *names], rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders or folders above them")
    parser.add_argument("--csv", type=Path, help="also write the table to this CSV file")
    args = parser.parse_args(argv)
    runs = finished_runs(args.paths)
    if not runs:
        print(f"error: no metrics.json under {' '.join(map(str, args.paths))}", file=sys.stderr)
        return 2
    header, rows = table(runs)
    print(markdown(header, rows))
    if args.csv:
        with args.csv.open("w", newline="") as file:
            csv.writer(file).writerows([header, *rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
