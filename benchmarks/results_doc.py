"""Assemble ``benchmarks/RESULTS.md`` from the ``table.md`` files that suite runs wrote.

Nothing is typed in by hand: each section is a suite's own ``table.md`` (which ends with
the exact command, its wall time and the machine), headed by the date from its
``results.json``. Run after the suites:

    python -m benchmarks.results_doc runs/bench-synthetic runs/bench-real runs/bench-perf \
        --out benchmarks/RESULTS.md
"""
from __future__ import annotations

import argparse
import json
import os

from policies.errors import DataError
from train.checkpoint import write_text_atomic

HEADER = """# Benchmark results

Produced by `maskpolicy bench` (see the README's Benchmarks section) and assembled by
`python -m benchmarks.results_doc`; every table below is a suite's `table.md` as written,
with the command, wall time and machine that produced it. Models are small and start from
a configuration: no pre-trained weights are available offline.
"""


def section(run_dir: str) -> str:
    table_path, results_path = os.path.join(run_dir, "table.md"), os.path.join(run_dir, "results.json")
    missing = [p for p in (table_path, results_path) if not os.path.isfile(p)]
    if missing:
        raise DataError(f"{run_dir}: not a finished suite run (missing {', '.join(missing)})")
    with open(results_path, encoding="utf-8") as fh:
        results = json.load(fh)
    with open(table_path, encoding="utf-8") as fh:
        table = fh.read().strip()
    # Demote the suite's own headings by one level under this document's title.
    lines = [("#" + line) if line.startswith("#") else line for line in table.splitlines()]
    lines.insert(1, f"\n*{results.get('date', '?')}, {results.get('machine', '?')}*")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="suite output directories (each with table.md + results.json)")
    parser.add_argument("--out", default="benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    text = HEADER + "\n" + "\n\n".join(section(d) for d in args.runs) + "\n"
    write_text_atomic(args.out, text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
