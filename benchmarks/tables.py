"""Aggregating seeds and writing tables: Markdown for people, CSV for tools."""
from __future__ import annotations

import csv
import io
import math
import os
import statistics

from maskpolicy.train.checkpoint import write_text_atomic


def mean_std(values: list[float]) -> tuple[float, float]:
    """(mean, sample std); std 0 for one value, (nan, nan) for none."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: list[float], digits: int = 3) -> str:
    """"0.912 ± 0.014" over seeds, "0.912" for one seed, "failed" for none."""
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "failed"
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(rows: list[dict], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(h, "")) for h in header) + " |")
    return "\n".join(lines)


def csv_text(rows: list[dict], header: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_text(directory: str, name: str, text: str) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    write_text_atomic(path, text)
    return path
