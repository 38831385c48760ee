"""Atomic checkpoints and result files.

A checkpoint is written into a hidden temporary directory next to its final place and
renamed into place only when complete (``os.replace`` is atomic on one filesystem), then
the ``latest`` pointer is swapped the same way. A run killed at any moment therefore
leaves either the previous checkpoint or the new one, never a half-written one.

    out/checkpoints/step-000500/   accelerate state (model, optimizer, scheduler, RNG)
                                   + trainer_state.json (step, history)
    out/checkpoints/latest         text file: "step-000500"
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile

from policies.errors import ArtifactError

STATE_FILE = "trainer_state.json"


def write_json_atomic(path: str, data) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def save_directory_atomic(final_dir: str, write) -> None:
    """Call ``write(tmp_dir)`` then move the finished directory to ``final_dir``."""
    parent = os.path.dirname(os.path.abspath(final_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-")
    try:
        write(tmp)
        if os.path.exists(final_dir):
            old = tempfile.mkdtemp(dir=parent, prefix=".old-")
            os.replace(final_dir, os.path.join(old, "x"))
            os.replace(tmp, final_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class _DropTiedWeightsNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()


@contextlib.contextmanager
def _without_tied_weights_notice():
    """accelerate warns on every ``save_state`` that BERT's tied decoder weights (the same
    tensor as the word embeddings) are stored once; they are tied again on load (resume is
    tested bit-for-bit), so only that notice is dropped, every other warning still shows."""
    logger = logging.getLogger("accelerate.utils.other")
    notice = _DropTiedWeightsNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


def save_checkpoint(accelerator, checkpoints_dir: str, step: int, state: dict, keep: int = 2) -> str:
    name = f"step-{step:06d}"
    final = os.path.join(checkpoints_dir, name)

    def write(tmp: str) -> None:
        with _without_tied_weights_notice():
            accelerator.save_state(tmp)
        write_json_atomic(os.path.join(tmp, STATE_FILE), state)

    save_directory_atomic(final, write)
    write_text_atomic(os.path.join(checkpoints_dir, "latest"), name)
    # Keep the newest ``keep`` checkpoints.
    steps = sorted(d for d in os.listdir(checkpoints_dir) if d.startswith("step-"))
    for old in steps[:-keep]:
        shutil.rmtree(os.path.join(checkpoints_dir, old), ignore_errors=True)
    return final


def latest_checkpoint(checkpoints_dir: str) -> str | None:
    pointer = os.path.join(checkpoints_dir, "latest")
    if not os.path.isfile(pointer):
        return None
    with open(pointer, encoding="utf-8") as fh:
        path = os.path.join(checkpoints_dir, fh.read().strip())
    if not os.path.isfile(os.path.join(path, STATE_FILE)):
        raise ArtifactError(f"checkpoint {path} named by {pointer} is missing or incomplete")
    return path


def read_state(checkpoint: str) -> dict:
    try:
        with open(os.path.join(checkpoint, STATE_FILE), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError) as err:
        raise ArtifactError(f"checkpoint {checkpoint} is corrupt: {err}") from None
