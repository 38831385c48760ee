"""maskpolicy's pre-training loop over processes and threads on one machine: the same run
(global batch, steps) as 1 process x 1 thread, 1 process x 2 threads (OMP_NUM_THREADS) and
2 processes x 1 thread under torchrun (gloo; each rank gets half of every global batch), each
in fresh subprocesses so that the thread settings are clean. tokens/s = tokens of all ranks
/ rank 0's loop time, from the final checkpoint; the ratio is against 1 process x 1 thread.
"""
from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time

from .loop_workload import BATCH_SIZE, DEFAULT, MAX_LENGTH, MODEL, TASK, Workload, loop_state

SCALING = (("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scaling_command(out: str, steps: int, processes: int, seed: int = 0, workload: Workload = DEFAULT) -> list[str]:
    """The command line of one scaling run (``torchrun`` for more than one process)."""
    args = ["pretrain", "--task", TASK, "--model", MODEL, "--policy", "random", "--steps", str(steps),
            "--batch-size", str(BATCH_SIZE), "--max-length", str(MAX_LENGTH), "--seed", str(seed),
            "--eval-every", "0", "--save-every", "0", "--no-evaluate", "--quiet", "--cpu", "--out", out, "--overwrite"]
    args += workload.flags()
    if processes == 1:
        return [sys.executable, "-m", "maskpolicy.cli", *args]
    # torchrun as a module of this interpreter: no dependence on where the script was installed.
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), "-m", "maskpolicy.cli", *args]


def run_scaled(out: str, steps: int, processes: int, threads: int, seed: int = 0,
               workload: Workload = DEFAULT) -> dict:
    """One maskpolicy run in fresh process(es) with ``threads`` threads each."""
    # Set before the interpreter starts: torch sizes its thread pool from these at import.
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = scaling_command(out, steps, processes, seed, workload)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-5:]
        raise RuntimeError(f"scaling run ({processes} x {threads}) failed: " + " | ".join(tail))
    with open(os.path.join(out, "results.json"), encoding="utf-8") as fh:
        result = json.load(fh)
    state = loop_state(out)
    seconds, tokens = float(state["train_seconds"]), int(state["tokens_seen"])
    return {"processes": int(result["processes"]), "threads": threads, "steps": int(state["step"]), "seconds": seconds,
            "tokens": tokens, "tokens_per_second": tokens / seconds,
            "results_json_tokens_per_second": result["tokens_per_second"],
            "subprocess_wall_seconds": time.perf_counter() - started, "command": " ".join(command)}


def scaling(out: str, steps: int, repeats: int, *, seed: int = 0, workload: Workload = DEFAULT) -> dict:
    """Each configuration ``repeats`` times, the order rotated every round; medians."""
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in SCALING}
    for round_ in range(repeats):
        shift = round_ % len(SCALING)
        for name, processes, threads in SCALING[shift:] + SCALING[:shift]:
            path = os.path.join(out, f"scaling_{processes}p{threads}t_{round_}")
            runs[name].append(run_scaled(path, steps, processes, threads, seed, workload))
    median = {name: statistics.median(r["tokens_per_second"] for r in rs) for name, rs in runs.items()}
    base = median[SCALING[0][0]]
    return {"steps": steps, "repeats": repeats, "runs": runs, "median_tokens_per_second": median,
            "ratio_vs_1x1": {name: v / base for name, v in median.items()}}
