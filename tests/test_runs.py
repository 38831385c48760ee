"""Runs that fail cleanly: output checks before any work, one run per --out, resume that
refuses another run's options or a damaged checkpoint, files with the user's umask."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from maskpolicy.cli import main
from maskpolicy.policies.atomic import current_umask
from maskpolicy.train.config import PretrainConfig
from maskpolicy.train.pretrain import pretrain
from maskpolicy.train.run_dir import RunLock

SMALL = dict(task="synthetic:birthplace", task_options={"num_entities": 16}, steps=8, batch_size=8,
             max_length=32, eval_every=0, save_every=4, progress=False, vocab_size=400, evaluate=False)


def _flags(steps: int = 8) -> list[str]:
    """``SMALL`` as command-line flags."""
    return ["--task", "synthetic:birthplace", "--task-option", "num_entities=16", "--steps", str(steps),
            "--batch-size", "8", "--max-length", "32", "--eval-every", "0", "--save-every", "4", "--vocab-size", "400",
            "--no-evaluate", "--quiet"]


FLAGS = _flags()


class Killed(Exception):
    pass


def _kill_at(n):
    def on_step(step, history):
        if step == n:
            raise Killed()
    return on_step


def _one_error_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("maskpolicy: error: "), err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


def _no_model(monkeypatch):
    """Fail the test if a model gets built: the refusal must come before any work."""
    import maskpolicy.train.objectives as mod

    monkeypatch.setattr(mod, "preset_model", lambda *a, **k: pytest.fail("built a model before refusing"))


def test_out_naming_an_existing_file_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    _no_model(monkeypatch)
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    assert main(["pretrain", *FLAGS, "--out", str(target)]) == 2
    _one_error_line(capsys, "not a directory")
    assert target.read_text() == "keep me"


def test_out_that_cannot_be_written_is_refused_before_any_work(unwritable_dir, capsys, monkeypatch):
    _no_model(monkeypatch)
    out = os.path.join(unwritable_dir, "run")
    assert main(["pretrain", *FLAGS, "--out", out]) == 2
    _one_error_line(capsys, "cannot write")
    assert not os.path.exists(out)


def test_a_failing_policy_leaves_no_output_directory(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", *FLAGS, "--policy", "no-such-policy", "--out", str(out)]) == 2
    _one_error_line(capsys, "no-such-policy")
    assert not out.exists()
    assert main(["pretrain", *FLAGS, "--model", str(tmp_path / "missing-model"), "--out", str(out)]) == 2
    capsys.readouterr()
    assert not out.exists()


def test_an_earlier_run_is_refused_without_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    first = pretrain(PretrainConfig(out=str(out), **SMALL))
    before = (out / "results.json").read_text()
    assert main(["pretrain", *FLAGS, "--seed", "1", "--out", str(out)]) == 2
    _one_error_line(capsys, "earlier run", "--resume", "--overwrite")
    assert (out / "results.json").read_text() == before
    assert main(["pretrain", *FLAGS, "--seed", "1", "--out", str(out), "--overwrite"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["config"]["seed"] == 1 and first["config"]["seed"] == 0
    assert sorted(os.listdir(out / "checkpoints")) == ["latest", "step-000004", "step-000008"]
    capsys.readouterr()
    assert main(["pretrain", *FLAGS, "--out", str(out), "--overwrite", "--resume"]) == 2
    _one_error_line(capsys, "give one of them")


def test_resume_with_other_options_is_refused_naming_the_differences(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(Killed):
        pretrain(PretrainConfig(out=str(out), **SMALL), on_step=_kill_at(4))
    assert main(["pretrain", *FLAGS, "--out", str(out), "--resume", "--seed", "3", "--policy", "span",
                 "--rate", "0.2"]) == 2
    line = _one_error_line(capsys, "seed: 0 -> 3", "policy: 'random' -> 'span'", "masking.rate: 0.15 -> 0.2")
    assert "eval_every" not in line
    # Evaluation cadence and output options may change between segments.
    assert main(["pretrain", *FLAGS, "--out", str(out), "--resume", "--eval-every", "4"]) == 0


def test_a_truncated_checkpoint_is_named_and_the_previous_one_offered(tmp_path, capsys):
    out = tmp_path / "run"
    config = dict(SMALL, steps=12)
    with pytest.raises(Killed):
        pretrain(PretrainConfig(out=str(out), **config), on_step=_kill_at(8))
    weights = out / "checkpoints" / "step-000008" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    flags = _flags(steps=12)
    assert main(["pretrain", *flags, "--out", str(out), "--resume"]) == 2
    _one_error_line(capsys, "step-000008 is corrupt", "step-000004")
    # Following the advice resumes from the previous checkpoint and finishes the run.
    import shutil

    shutil.rmtree(weights.parent)
    assert main(["pretrain", *flags, "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "results.json").read_text())["resumed_from_step"] == 4


def test_a_second_run_into_the_same_out_is_refused_while_the_first_runs(tmp_path, capsys):
    out = tmp_path / "run"
    with RunLock(str(out)):
        assert main(["pretrain", *FLAGS, "--out", str(out)]) == 2
        _one_error_line(capsys, "in use by another run", f"pid {os.getpid()}")
    assert main(["pretrain", *FLAGS, "--out", str(out)]) == 0  # free again once released


def test_a_killed_run_does_not_leave_the_lock_stuck(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from maskpolicy.train.run_dir import RunLock
        lock = RunLock({str(out)!r})
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(Exception, match="in use by another run"):
            RunLock(str(out))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    RunLock(str(out)).release()  # the kernel released the dead process's lock


def test_temporaries_of_a_killed_run_are_cleaned_on_the_next_start(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Killed):
        pretrain(PretrainConfig(out=str(out), **SMALL), on_step=_kill_at(4))
    # What a kill in the middle of an atomic write leaves behind.
    (out / ".tmp-abc123").mkdir()
    (out / ".tmp-abc123" / "model.safetensors").write_bytes(b"half")
    (out / "checkpoints" / ".tmp-step-000008").mkdir()
    (out / ".tmp-xyz.json").write_text("{")
    pretrain(PretrainConfig(out=str(out), resume=True, **SMALL))
    leftovers = [p for d in (out, out / "checkpoints") for p in os.listdir(d) if p.startswith((".tmp-", ".old-"))]
    assert leftovers == []


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_results_and_weights_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        out = tmp_path / "run"
        pretrain(PretrainConfig(out=str(out), **SMALL))
    finally:
        os.umask(old)
    for path in [out / "results.json", out / "model", out / "checkpoints" / "step-000008", out / "checkpoints" / "latest",
                 *(out / "model").iterdir(), *(out / "checkpoints" / "step-000008").iterdir()]:
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert path.stat().st_mode & 0o777 == expected, (path, oct(path.stat().st_mode))


def test_train_seconds_and_throughput_cover_every_segment_of_a_resumed_run(tmp_path):
    full = pretrain(PretrainConfig(out=str(tmp_path / "full"), **SMALL))
    with pytest.raises(Killed):
        pretrain(PretrainConfig(out=str(tmp_path / "split"), **SMALL), on_step=_kill_at(4))
    first = json.loads((tmp_path / "split" / "checkpoints" / "step-000004" / "trainer_state.json").read_text())
    resumed = pretrain(PretrainConfig(out=str(tmp_path / "split"), resume=True, **SMALL))
    last = json.loads((tmp_path / "split" / "checkpoints" / "step-000008" / "trainer_state.json").read_text())
    # The same global batches: the token count of the two segments is the uninterrupted run's.
    state_full = json.loads((tmp_path / "full" / "checkpoints" / "step-000008" / "trainer_state.json").read_text())
    assert last["tokens_seen"] == state_full["tokens_seen"] > first["tokens_seen"] > 0
    assert resumed["train_seconds"] >= first["train_seconds"] > 0
    # Both segments' tokens over both segments' time (one segment's would be about half).
    assert resumed["tokens_per_second"] == pytest.approx(last["tokens_seen"] / resumed["train_seconds"], rel=0.1)
    assert resumed["resumed_from_step"] == 4 and full["resumed_from_step"] is None
