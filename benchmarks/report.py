"""Writing a suite's outputs: ``table.md``, ``table.csv``, ``results.json`` and PNG plots."""
from __future__ import annotations

import json
import os
import platform
import time

from maskpolicy.train.checkpoint import write_json_atomic

from .curves import mean_curve, reach_fraction
from .grid import LEARNED, GridSpec
from .plots import curves
from .tables import csv_text, markdown_table, write_text


def machine() -> str:
    import torch

    cores = os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.system()} {platform.machine()}, {cores} CPU cores, {gpu}, torch {torch.__version__}"


def preset_flag(preset: str) -> str:
    """The ``maskpolicy bench`` flag that selects ``preset`` (full is the default)."""
    return {"full": "", "quick": " --quick", "pretrained-quick": " --preset pretrained --quick"}.get(
        preset, f" --preset {preset}")


def bench_command(base: str, preset: str, out: str, **flags) -> str:
    """The command line that reproduces a suite run, as written under its table: ``flags``
    (``transfer_seeds=2`` -> ``--transfer-seeds 2``) in the order given, those left at
    their default (None) omitted; ``no_seq2seq=True`` -> the bare switch ``--no-seq2seq``."""
    given = "".join(f" --{name.replace('_', '-')}" + ("" if value is True else f" {value}")
                    for name, value in flags.items() if value is not None and value is not False)
    return f"{base}{preset_flag(preset)}{given} --out {out}"


def reach_rows(grid: dict, spec: GridSpec) -> list[dict]:
    """For each policy but ``random`` and ``none`` (no curve): fraction of ``random``'s steps
    needed to reach ``random``'s final score."""
    rows = []
    for policy in [p for p in spec.policies if p not in ("random", "none")]:
        row = {"policy": policy}
        for task in spec.tasks:
            row[task] = reach_fraction(grid, task, policy, key=spec.curve_key)["text"]
        rows.append(row)
    return rows


def curve_plots(grid: dict, spec: GridSpec, out: str, metric: str) -> list[str]:
    paths = []
    for task in spec.tasks:
        series = {}
        for policy in spec.policies:
            cells = [c for c in grid["cells"] if c["task"] == task and c["policy"] == policy]
            steps, mean, std = mean_curve(cells, spec.curve_key)
            if steps and policy != "none":
                series[policy] = (steps, mean, std)
        path = curves(series, os.path.join(out, f"curves_{_file_part(task)}.png"),
                      f"{task}: {metric} during intermediate pre-training (mean over seeds)", ylabel=metric)
        if path:
            paths.append(path)
    return paths


def _file_part(task: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in os.path.basename(os.path.normpath(task)))


def _jsonable(value):
    return json.loads(json.dumps(value, default=str, allow_nan=True))


def write_suite(out: str, *, suite: str, title: str, sections: list[tuple[str, str]], rows: list[dict],
                header: list[str], results: dict, started: float, command: str, csv_rows: list[dict] | None = None,
                preset: str = "full", csv_header: list[str] | None = None) -> dict:
    """``sections``: (heading, markdown) pairs after the main table (none when ``rows`` is
    empty); ``rows`` (or ``csv_rows``) with ``header`` (or ``csv_header``: the CSV may carry
    more columns than the Markdown table, e.g. numbers behind a formatted cell) go to
    ``table.csv``; ``results`` (every number with its seed, steps and config) to
    ``results.json``. The heading names the preset when it is not the full one ("# real
    --quick"). Returns ``{"table", "out", "wall_seconds"}``."""
    wall = round(time.perf_counter() - started, 1)
    text = f"# {suite}{preset_flag(preset)}\n\n{title}" + (f"\n\n{markdown_table(rows, header)}" if rows else "")
    for heading, body in sections:
        text += f"\n\n## {heading}\n\n{body}"
    text += f"\n\n`{command}`: {wall:.0f} s on {machine()}\n"
    write_text(out, "table.md", text)
    write_text(out, "table.csv", csv_text(rows if csv_rows is None else csv_rows, csv_header or header))
    write_json_atomic(os.path.join(out, "results.json"), _jsonable({
        "suite": suite, "preset": preset, "command": command, "machine": machine(), "date": time.strftime("%Y-%m-%d"),
        "wall_seconds": wall, **results}))
    return {"table": text, "out": out, "wall_seconds": wall}


def failure_lines(records: list[dict]) -> str:
    return "\n".join(f"- {r['task']} / {r['policy']} / seed {r['seed']}: {r['error']}" for r in records
                     if r.get("status") == "failed")

