"""Bad command lines and bad files: one line ``maskpolicy: error: ...``, exit code 2, no
traceback and nothing written; ``--quiet`` silences the libraries' progress bars too."""
from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path

import pytest

from maskpolicy.cli import main

TINY_TASK = ["--task", "synthetic:birthplace", "--task-option", "num_entities=20"]
TINY_RUN = ["--steps", "2", "--batch-size", "8", "--max-length", "32", "--eval-every", "0", "--save-every", "0",
            "--vocab-size", "300"]
LATIN1 = b"caf\xe9"  # "café" in latin-1: not UTF-8


def _one_error_line(capsys, code: int) -> str:
    """The run failed the project's way: exit code 2 and exactly one error line on stderr."""
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maskpolicy: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _fake_model_dir(path: Path) -> Path:
    """A model directory that passes the file checks but cannot be loaded: a command that
    reaches the loading has not checked its output first."""
    path.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (path / name).write_text("{}", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- 1. argparse
@pytest.mark.parametrize("argv, expected", [
    (["pretrain", "--foo"], "maskpolicy: error: pretrain: unrecognized arguments: --foo"),
    (["pretrain", "--fill", "bad"], "maskpolicy: error: pretrain: argument --fill: invalid choice: 'bad'"),
    (["learn", "--meta-steps", "x"], "maskpolicy: error: learn: argument --meta-steps: invalid int value: 'x'"),
    ([], "maskpolicy: error: missing subcommand: give one of pretrain, learn, evaluate, finetune, show, pmi, bench"),
])
def test_argparse_errors_are_one_line_with_the_subcommand(argv, expected, capsys):
    line = _one_error_line(capsys, main(argv))
    assert line.startswith(expected)
    assert "usage:" not in line


def test_help_still_prints_the_full_help(capsys):
    assert main(["--help"]) == 0
    assert "usage: maskpolicy" in capsys.readouterr().out
    assert main(["pretrain", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: maskpolicy pretrain" in out and "--quiet" in out


# ----------------------------------------------------------------------------- 2. output paths
@pytest.fixture()
def afile(tmp_path: Path) -> Path:
    path = tmp_path / "afile"
    path.write_text("keep me\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["evaluate", "pmi", "show"])
@pytest.mark.parametrize("where", ["a directory", "under a file"])
def test_output_file_that_is_a_directory_or_under_a_file_is_refused(command, where, tmp_path, afile, capsys):
    target = tmp_path / "outdir" if where == "a directory" else afile / "out.json"
    if where == "a directory":
        target.mkdir()
    argv = {
        "evaluate": ["evaluate", "--model", str(_fake_model_dir(tmp_path / "model")), "--task", "synthetic",
                     "--out", str(target)],
        "pmi": ["pmi", "--task", "synthetic:colour", "--out", str(target)],
        "show": ["show", "--policy", "random", "--text", "a b c", "--png", str(target)],
    }[command]
    line = _one_error_line(capsys, main(argv))
    flag = "--png" if command == "show" else "--out"
    assert line.startswith(f"maskpolicy: error: {flag}: ")
    assert ("is a directory" if where == "a directory" else "is not a directory") in line
    assert afile.read_text(encoding="utf-8") == "keep me\n"
    if where == "a directory":
        assert list(target.iterdir()) == []


@pytest.mark.parametrize("argv", [
    ["learn", *TINY_TASK, "--method", "supervised"],
    ["bench", "--suite", "quickstart", "--quick"],
    ["pretrain", *TINY_TASK, *TINY_RUN, "--quiet"],
])
def test_output_directory_that_is_a_file_is_refused(argv, afile, capsys):
    line = _one_error_line(capsys, main(argv + ["--out", str(afile)]))
    assert f"--out: {afile} exists and is not a directory" in line
    assert afile.read_text(encoding="utf-8") == "keep me\n"


def test_learn_refuses_an_unwritable_output_directory(unwritable_dir, capsys):
    out = os.path.join(unwritable_dir, "policy")
    line = _one_error_line(capsys, main(["learn", *TINY_TASK, "--out", out]))
    assert "cannot write" in line
    assert not os.path.exists(out)


# ----------------------------------------------------------------------------- 3. not UTF-8
def test_config_file_that_is_not_utf8(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_bytes(b"steps: 2\ndescription: " + LATIN1 + b"\n")
    line = _one_error_line(capsys, main(["pretrain", "--config", str(config), "--out", str(tmp_path / "run")]))
    assert f"{config} is not UTF-8 text" in line and "line 2" in line and "0xe9" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bad_file", ["corpus.txt", "train.csv"])
def test_task_directory_file_that_is_not_utf8(bad_file, cls_dir, tmp_path, capsys):
    task = cls_dir  # conftest's classification task, one file made latin-1 below
    with open(task / bad_file, "ab") as fh:
        fh.write(LATIN1 + (b",pos\n" if bad_file.endswith(".csv") else b" au lait .\n"))
    out = tmp_path / "pmi.json"
    line = _one_error_line(capsys, main(["pmi", "--task", str(task), "--out", str(out)]))
    bad_line = {"corpus.txt": 4, "train.csv": 5}[bad_file]  # the appended line
    assert f"{task / bad_file} is not UTF-8 text (undecodable byte 0xe9 on line {bad_line}," in line
    assert not out.exists()


# ----------------------------------------------------------------------------- 4. empty --model
@pytest.mark.parametrize("command", ["pretrain", "evaluate", "learn"])
def test_empty_model_directory_names_what_is_missing(command, tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    out = tmp_path / "out"
    argv = [command, "--model", str(model), *TINY_TASK]
    argv += ["--out", str(out if command != "evaluate" else out / "eval.json")]
    line = _one_error_line(capsys, main(argv))
    assert f"model directory {model} is incomplete" in line
    for missing in ("config.json", "weights", "tokenizer files"):
        assert missing in line
    assert not out.exists()


# ----------------------------------------------------------------------------- 5. task options
def test_unknown_task_option_lists_every_accepted_option(tmp_path, capsys):
    from maskpolicy.tasks.synthetic import SyntheticWorldConfig

    line = _one_error_line(capsys, main(["pretrain", "--task", "synthetic:birthplace", "--task-option", "bogus=1",
                                         "--steps", "1", "--out", str(tmp_path / "x")]))
    allowed = line.split("allowed: ", 1)[1].split(", ")
    assert "seed" in allowed
    assert sorted(allowed) == sorted(f.name for f in fields(SyntheticWorldConfig))
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- 6. --quiet
BARS = ("Loading weights", "Writing model shards")


def test_quiet_silences_the_libraries_progress_bars(tmp_path, capsys):
    from transformers.utils import logging as hf_logging

    run = tmp_path / "run"
    assert main(["pretrain", *TINY_TASK, *TINY_RUN, "--no-evaluate", "--quiet", "--out", str(run)]) == 0
    err = capsys.readouterr().err
    assert not any(bar in err for bar in BARS), err
    assert hf_logging.is_progress_bar_enabled()  # restored after the command
    model = str(run / "model")
    # Without --quiet transformers draws its bar (so the assertion below can fail) ...
    assert main(["evaluate", "--model", model, "--out", str(tmp_path / "a.json")]) == 0
    assert "Loading weights" in capsys.readouterr().err
    # ... and with it, none.
    assert main(["evaluate", "--model", model, "--quiet", "--out", str(tmp_path / "b.json")]) == 0
    err = capsys.readouterr().err
    assert not any(bar in err for bar in BARS), err
