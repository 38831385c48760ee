"""Progress bars of the libraries maskpolicy drives, switched with maskpolicy's own.

transformers, huggingface_hub and datasets draw bars of their own (loading weights, writing
model shards, dataset maps); ``--quiet`` and ``progress: false`` silence them too.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

# Read by huggingface_hub and datasets when they are imported: how a --quiet command reaches
# the bars of the worker processes it spawns (bench runs its cells in fresh interpreters).
_PROGRESS_ENV = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")


@contextlib.contextmanager
def library_progress_bars(show: bool) -> Iterator[None]:
    """``--quiet`` silences the bars transformers and datasets draw themselves too (loading
    weights, writing model shards, dataset maps), not only maskpolicy's; the previous state
    is restored afterwards so that a quiet command leaves its caller (tests, a notebook) as
    it was."""
    if show:
        yield
        return
    import datasets
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    transformers_on, hub_off = hf_logging.is_progress_bar_enabled(), hub_utils.are_progress_bars_disabled()
    datasets_on = datasets.is_progress_bar_enabled()
    env = {name: os.environ.get(name) for name in _PROGRESS_ENV}
    hf_logging.disable_progress_bar()  # transformers' and huggingface_hub's
    datasets.disable_progress_bars()
    os.environ.update({name: "1" for name in _PROGRESS_ENV})
    try:
        yield
    finally:
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if transformers_on:
            hf_logging.enable_progress_bar()  # turns huggingface_hub's on too ...
        if hub_off:
            hub_utils.disable_progress_bars()  # ... which may have been off on its own
        if datasets_on:
            datasets.enable_progress_bars()
