"""The ``maskpolicy`` command: subcommands, --config files, one-line errors with exit code 2."""
from __future__ import annotations

import json

import pytest

from maskpolicy.cli import main

SMALL_FLAGS = ["--steps", "4", "--batch-size", "8", "--max-length", "32", "--eval-every", "2", "--save-every", "2", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    config = root / "run.yaml"
    config.write_text("task: synthetic:birthplace\npolicy: salient_span\ntask_options:\n  num_entities: 16\n"
                      "vocab_size: 400\nmasking:\n  rate: 0.2\n")
    assert main(["pretrain", "--config", str(config), "--out", str(root / "run"), "--seed", "3"] + SMALL_FLAGS) == 0
    return root


def test_pretrain_with_config_file_and_flag_override(trained):
    results = json.loads((trained / "run" / "results.json").read_text())
    assert results["config"]["masking"]["rate"] == 0.2  # from the file
    assert results["config"]["seed"] == 3 and results["config"]["steps"] == 4  # flags
    assert results["policy"]["name"] == "salient_span"


def test_evaluate_saved_model(trained, capsys):
    model = trained / "run" / "model"
    assert main(["evaluate", "--model", str(model)]) == 0  # task, its options and max_length from the run
    saved = json.loads((model / "eval_synthetic_birthplace.json").read_text())
    run = json.loads((trained / "run" / "results.json").read_text())
    assert saved["metrics"]["cloze_em"] == run["metrics"]["cloze_em"]
    assert '"cloze_em"' in capsys.readouterr().out


def test_show_terminal_and_png(trained, tmp_path, capsys):
    png = tmp_path / "heat.png"
    code = main(["show", "--policy", "salient_span", "--model", str(trained / "run" / "model"),
                 "--text", "it is said that Dravik was born in Velmora in 1987 .", "--png", str(png)])
    out = capsys.readouterr().out
    assert code == 0 and "born" in out and "tokens masked" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pmi_table_command_and_policy_use(tmp_path, capsys):
    table = tmp_path / "pmi.json"
    assert main(["pmi", "--task", "synthetic:colour", "--min-count", "3", "--out", str(table)]) == 0
    data = json.loads(table.read_text())
    assert data["ngrams"] and "fingerprint" in data
    code = main(["show", "--policy", "pmi", "--policy-option", f"table={table}", "--task", "synthetic:colour",
                 "--text", "the favourite colour of Dravik is teal ."])
    assert code == 0 and "pmi" in capsys.readouterr().out


def test_pmi_and_show_take_task_options_like_the_runs_do(tmp_path, capsys):
    # A table built for another world (seed 1) is refused by a policy on the default
    # world's tokenizer and accepted on that world's: the task options reach the tokenizer.
    table = tmp_path / "pmi.json"
    world = ["--task", "synthetic:colour", "--task-option", "seed=1", "--task-option", "num_entities=40",
             "--vocab-size", "500"]
    assert main(["pmi", *world, "--min-count", "2", "--out", str(table)]) == 0
    capsys.readouterr()
    text = ["--text", "the favourite colour of Dravik is teal ."]
    assert main(["show", "--policy", "pmi", "--policy-option", f"table={table}", *world, *text]) == 0
    assert "pmi" in capsys.readouterr().out
    assert main(["show", "--policy", "pmi", "--policy-option", f"table={table}", "--task", "synthetic:colour", *text]) == 2
    assert "tokenizer" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["pretrain", "--task", "nope"], "unknown task 'nope'"),
    (["pretrain", "--policy", "nope"], "unknown policy 'nope'"),
    (["pretrain", "--rate", "1.5"], "mask rate must be in (0, 1)"),
    (["pretrain", "--steps", "-1"], "steps must be a whole number >= 0"),
    (["evaluate", "--model", "/does/not/exist", "--task", "synthetic"], "model directory not found"),
    (["show", "--policy", "/does/not/exist", "--text", "a b c"], "no saved policy at '/does/not/exist'"),
    (["bench", "--suite", "nope"], "unknown suite 'nope'"),
])
def test_bad_input_gives_one_line_and_exit_code_2(argv, message, tmp_path, capsys):
    code = main(argv + ["--out", str(tmp_path / "o")] if argv[0] in ("pretrain", "bench") else argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("maskpolicy: error:") and message in err and "\n" not in err
    assert not (tmp_path / "o" / "model").exists()


def test_resume_without_checkpoint_and_malformed_config(tmp_path, capsys):
    assert main(["pretrain", "--resume", "--out", str(tmp_path / "r")] + SMALL_FLAGS) == 2
    assert "no checkpoint" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [unclosed\n")
    assert main(["pretrain", "--config", str(bad)]) == 2
    assert "cannot parse config file" in capsys.readouterr().err
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"stepz": 3}))
    assert main(["pretrain", "--config", str(unknown)]) == 2
    assert "unknown pretrain option(s) stepz" in capsys.readouterr().err
