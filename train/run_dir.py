"""A run's output directory: checked before any work, locked while the run writes.

    out/.maskpolicy.lock   held (flock) by the run writing here; the kernel drops it when
                           the process dies, so a killed run never leaves it stuck
    out/checkpoints/       written by train.checkpoint
    out/model/             the final model (+ tokenizer, run config)
    out/results.json

Only the main process of a multi-process run locks, cleans and writes; the other ranks
only check.
"""
from __future__ import annotations

import fcntl
import os
import shutil

from maskpolicy.policies.atomic import remove_stale_temporaries
from maskpolicy.policies.errors import ArtifactError, ConfigError
from maskpolicy.policies.paths import check_output_dir

LOCK_FILE = ".maskpolicy.lock"
# What a pretrain run writes into its --out; --overwrite removes exactly these.
RUN_OUTPUTS = ("checkpoints", "model", "results.json", "pmi_table.json")


def earlier_run(out: str) -> str | None:
    """A short description of the run already in ``out`` (None when there is none)."""
    found = [name for name in RUN_OUTPUTS[:3] if os.path.exists(os.path.join(out, name))]
    if not found:
        return None
    checkpoints = os.path.join(out, "checkpoints")
    steps = sorted(d for d in os.listdir(checkpoints) if d.startswith("step-")) if os.path.isdir(checkpoints) else []
    return ", ".join(found) + (f"; last checkpoint {steps[-1]}" if steps else "")


def check_run_dir(out: str, *, resume: bool, overwrite: bool) -> None:
    """Everything about ``out`` that can be refused before any work; creates nothing."""
    if resume and overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    check_output_dir(out)
    found = earlier_run(out) if os.path.isdir(out) else None
    if found and not (resume or overwrite):
        raise ArtifactError(f"{out} holds an earlier run ({found}): --resume continues it, --overwrite replaces it, "
                            "or choose another --out")


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``out/.maskpolicy.lock`` (creates ``out``)."""

    def __init__(self, out: str) -> None:
        os.makedirs(out, exist_ok=True)
        self.path = os.path.join(out, LOCK_FILE)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self._fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(self._fd)
            self._fd = None
            raise ArtifactError(f"{out} is in use by another run (pid {holder}); wait for it to end or choose "
                                "another --out") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def clean_run_dir(out: str, *, overwrite: bool) -> list[str]:
    """Under the lock: remove what killed writers left (``.tmp-*``), and with ``overwrite``
    the earlier run's outputs. Returns what was removed (relative names)."""
    removed = []
    for sub in ("", "checkpoints"):
        removed += [os.path.join(sub, name) for name in remove_stale_temporaries(os.path.join(out, sub))]
    if overwrite:
        for name in RUN_OUTPUTS:
            path = os.path.join(out, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
                removed.append(name)
            elif os.path.exists(path):
                os.remove(path)
                removed.append(name)
    return removed
