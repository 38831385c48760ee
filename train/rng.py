"""Work that must not move the global random states a run's seed fixes.

A run seeds python, numpy and torch once (``set_seed``); what it draws afterwards fixes the
initialisation of a model built from a configuration (and of any new head); the data order
has its own seeded sampler. Building a ``learned`` policy initialises a network before
loading its weights, and a downstream probe fine-tunes a copy: both draw from those states.
Run inside ``untouched_random_state()`` they leave them as they were, so a run with a
learned policy (or with probes) starts from the same model as a heuristic run of the same
seed: what the paired comparisons assume.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


@contextmanager
def untouched_random_state() -> Iterator[None]:
    """Restore python's, numpy's and torch's (CPU and initialised CUDA devices') global
    random states on exit, whatever the body drew."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng():
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
