"""One installed namespace: maskpolicy's layers install as maskpolicy.policies, ...tasks,
...train, ...meta, ...benchmarks, never as top-level packages (each bare name belongs to
another project on the package index). Checked for a non-editable install into a fresh
target directory and for the editable install the tests run under, both used from
another directory than the repository."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("policies", "tasks", "train", "meta", "benchmarks")
CHECK = f"""
import importlib.util, sys
import maskpolicy, maskpolicy.cli
import maskpolicy.policies, maskpolicy.policies.heuristics, maskpolicy.tasks.registry
import maskpolicy.train.pretrain, maskpolicy.meta.learn, maskpolicy.benchmarks.suites
bare = [name for name in {LAYERS!r} if importlib.util.find_spec(name) is not None]
assert not bare, f"top-level packages importable: {{bare}}"
print(maskpolicy.policies.__file__)
"""


def _python(code_or_args, cwd, extra_env=None) -> subprocess.CompletedProcess:
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only what the test puts there
    env.update({"OMP_NUM_THREADS": "1", **(extra_env or {})})
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """``pip install --no-deps --target DIR .`` (a wheel built from the checkout, not editable)."""
    # Built from a copy of the sources: setuptools builds in the source tree (build/, *.egg-info).
    source = tmp_path_factory.mktemp("src") / "maskpolicy"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "venv", "runs", "build", "dist",
                                                               "*.egg-info", "__pycache__", ".pytest_cache"))
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-warn-script-location", "--target", str(target), str(source)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return target


def test_a_non_editable_install_holds_one_top_level_package(installed):
    top = sorted(p.name for p in installed.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin")
    assert top == ["maskpolicy"]
    assert sorted(p.name for p in (installed / "maskpolicy").iterdir() if p.is_dir() and p.name != "__pycache__") \
        == sorted(LAYERS)
    records = next(installed.glob("maskpolicy-*.dist-info")) / "RECORD"
    assert not [line for line in records.read_text().splitlines() if line.split("/")[0] in LAYERS]


def test_a_non_editable_install_runs_from_another_directory(installed, tmp_path):
    env = {"PYTHONPATH": str(installed)}
    done = _python(CHECK, cwd=tmp_path, extra_env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith(str(installed))  # not the checkout's folder
    run = _python(["-m", "maskpolicy", "pretrain", "--task", "synthetic:birthplace", "--task-option",
                   "num_entities=16", "--steps", "2", "--batch-size", "8", "--max-length", "32", "--vocab-size", "400",
                   "--eval-every", "0", "--no-evaluate", "--quiet", "--out", str(tmp_path / "run")],
                  cwd=tmp_path, extra_env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "run" / "results.json").is_file()


def test_the_editable_install_maps_the_root_folders_into_the_namespace(tmp_path):
    import maskpolicy.policies

    if not Path(maskpolicy.policies.__file__).resolve().is_relative_to(ROOT):
        pytest.skip("maskpolicy is not installed editable from this checkout")
    done = _python(CHECK, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert Path(done.stdout.strip()).resolve() == ROOT / "policies" / "__init__.py"
