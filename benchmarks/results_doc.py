"""Assemble ``benchmarks/RESULTS.md`` from the ``table.md`` files that suite runs wrote.

Nothing is typed in by hand: each section is a suite's own ``table.md`` (which ends with
the exact command, its wall time and the machine), headed by the date from its
``results.json``. Run after the suites:

    python -m maskpolicy.benchmarks.results_doc runs/bench-synthetic runs/bench-real runs/bench-perf \
        --out benchmarks/RESULTS.md

``--keep HEADING`` carries a section over from the existing document unchanged (a suite
not re-run this time, e.g. ``--keep synthetic``); sections are in the order given, kept
ones first.
"""
from __future__ import annotations

import argparse
import json
import os
import re

from maskpolicy.policies.errors import DataError
from maskpolicy.train.checkpoint import write_text_atomic

HEADER = """# Benchmark results

Produced by `maskpolicy bench` (see the README's Benchmarks section) and assembled by
`python -m maskpolicy.benchmarks.results_doc`; every table below is a suite's `table.md` as written,
with the command, wall time and machine that produced it. Models start from a
configuration (tiny, mini) or, where a section says so, from the offline pretrained
all-MiniLM-L6-v2 (`minilm-l6`).
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
    # Demote the suite's own headings by one level under this document's title; plots stay
    # in the run directory (named, not embedded: the PNGs are not part of the repository).
    lines = [("#" + line) if line.startswith("#") else _plot_reference(line, run_dir) for line in table.splitlines()]
    lines.insert(1, f"\n*{results.get('date', '?')}, {results.get('machine', '?')}*")
    return "\n".join(lines)


def _plot_reference(line: str, run_dir: str) -> str:
    match = re.fullmatch(r"!\[[^\]]*\]\(([^)]+\.png)\)", line.strip())
    return f"(plot: `{os.path.join(os.path.basename(os.path.normpath(run_dir)), match.group(1))}` in the run directory)" \
        if match else line


def existing_sections(path: str) -> dict[str, str]:
    """``{heading: text}`` of the ``## heading`` sections of an assembled document."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return {}
    sections, current = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = [line]
        elif current is not None:
            sections[current].append(line)
    return {heading: "\n".join(lines).strip() for heading, lines in sections.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="suite output directories (each with table.md + results.json)")
    parser.add_argument("--keep", action="append", default=[], metavar="HEADING",
                        help="carry this section over from the existing --out document (repeatable)")
    parser.add_argument("--out", default="benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    old = existing_sections(args.out)
    missing = [h for h in args.keep if h not in old]
    if missing:
        raise SystemExit(f"results_doc: no section {', '.join(map(repr, missing))} in {args.out} "
                         f"(has: {', '.join(map(repr, old)) or 'none'})")
    if not args.runs and not args.keep:
        raise SystemExit("results_doc: give suite run directories and/or --keep HEADING")
    parts = [old[h] for h in args.keep] + [section(d) for d in args.runs]
    text = HEADER + "\n" + "\n\n".join(parts) + "\n"
    write_text_atomic(args.out, text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
