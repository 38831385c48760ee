"""``maskpolicy``: one command, subcommands mapped onto the layers.

    learn     (meta/)        learn a policy network: supervised labels or bilevel meta-gradients
    pretrain  (train/)       intermediate or general MLM pre-training with a policy, then evaluation
    evaluate  (train/)       evaluate a saved model on a task
    finetune  (train/)       adapt a model to a task: full fine-tuning, head only, or a learned weight mask
    show      (policies/)    a policy's mask probabilities over a text or a task's passages (terminal, --png)
    pmi       (policies/)    build the n-gram PMI table the ``pmi`` policy uses
    bench     (benchmarks/)  run a suite and print its table

Every subcommand takes ``--config FILE`` (YAML or JSON); flags given on the command line
override the file. Bad input ends with one line ``maskpolicy: error: ...`` and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from maskpolicy.policies.errors import MaskpolicyError

from maskpolicy.train.head_warmup import DEFAULT_STEPS as DEFAULT_HEAD_WARMUP_STEPS
from maskpolicy.train.sources import SOURCES

from . import commands


class UsageError(MaskpolicyError):
    """A command line argparse refuses (unknown flag, bad choice or number, no subcommand)."""


class Parser(argparse.ArgumentParser):
    """argparse with the project's error format: one line ``maskpolicy: error: SUBCOMMAND:
    ...`` and exit code 2 (through ``main``), not the usage block; ``--help`` is unchanged."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(_usage_message(self.prog, message))

    def parse_args(self, args=None, namespace=None) -> argparse.Namespace:  # type: ignore[override]
        # The subparser leaves its unknown arguments to this top-level parser, which would
        # report them without the subcommand's name.
        parsed, extras = self.parse_known_args(args, namespace)
        command = getattr(parsed, "command", None)
        if extras:
            raise UsageError(_usage_message(f"{self.prog} {command or ''}".strip(),
                                            f"unrecognized arguments: {' '.join(extras)}"))
        names = _subcommands(self)
        if names and command is None:
            raise UsageError(f"missing subcommand: give one of {', '.join(names)} (see {self.prog} --help)")
        return parsed


def _usage_message(prog: str, message: str) -> str:
    """``pretrain: MESSAGE (see maskpolicy pretrain --help)`` from a parser's ``prog``
    ("maskpolicy pretrain"): the usage block is gone, so the message points to the help."""
    command = prog.split(" ", 1)[1] if " " in prog else ""
    return f"{command + ': ' if command else ''}{message} (see {prog} --help)"


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    return [name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices]


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML or JSON file with options (flags override it)")


def _add_task(p: argparse.ArgumentParser, vocab_size: bool = True) -> None:
    p.add_argument("--task", help="task name (synthetic:birthplace, mr, squad, ...) or a task directory")
    p.add_argument("--task-option", action="append", metavar="KEY=VALUE",
                   help="task option, e.g. num_entities=400 or seed=1 for the synthetic world (repeatable)")
    if vocab_size:
        p.add_argument("--vocab-size", type=int, help="size of the WordPiece vocabulary built from the task")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="maskpolicy", description="Learned masking policies for MLM pre-training.")
    # Not required=True: Parser.parse_args names the subcommands when none is given.
    sub = parser.add_subparsers(dest="command", parser_class=Parser)

    p = sub.add_parser("pretrain", help="pre-train a masked LM (or a seq2seq model) on a task corpus with a masking "
                       "policy, then evaluate")
    _add_config(p)
    _add_task(p)
    p.add_argument("--policy", help="policy name or a saved policy directory")
    p.add_argument("--policy-option", action="append", metavar="KEY=VALUE", help="policy option (repeatable)")
    p.add_argument("--model", help="size preset (tiny, mini, small, base), an offline pretrained model "
                   f"({', '.join(SOURCES)}), or a masked-LM / encoder checkpoint dir / hub name")
    p.add_argument("--arch", choices=["mlm", "seq2seq"], help="mlm: a masked LM (default); seq2seq: an encoder-"
                   "decoder (BART presets tiny / mini, or a BART / T5 checkpoint) denoising span-corrupted text")
    p.add_argument("--output", choices=["spans", "full"], help="seq2seq: the decoder target, the masked spans "
                   "(default) or the full sentence")
    p.add_argument("--head-warmup-steps", type=int, help="a checkpoint without an MLM head: steps that train only "
                   "the new head, body frozen, on the run's corpus before pre-training (default "
                   f"{DEFAULT_HEAD_WARMUP_STEPS} when the head is new; 0 = none)")
    p.add_argument("--tokenizer", help="tokenizer dir / hub name / WordPiece vocab file")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--gradient-accumulation-steps", type=int)
    p.add_argument("--learning-rate", "--lr", type=float, dest="learning_rate")
    p.add_argument("--max-length", type=int)
    p.add_argument("--rate", type=float, help="mask rate (default 0.15)")
    p.add_argument("--fill", choices=["none", "ranking", "random"],
                   help="what fills the budget beyond the tokens the policy selects (p >= 0.5): nothing, the "
                   "policy's own ranking, or uniformly random tokens (default: the fill a learned policy was "
                   "validated with, else none)")
    p.add_argument("--seed", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--save-every", type=int)
    p.add_argument("--probe-every", type=int, help="classification tasks: fine-tune and record accuracy every N "
                   "steps (a multiple of --eval-every; the downstream compute curve)")
    p.add_argument("--out", help="output directory (model/, results.json, checkpoints/)")
    p.add_argument("--data-dir", help="directory of the real data sets (default: $MASKPOLICY_DATA_DIR)")
    p.add_argument("--resume", action="store_true", default=None, help="continue from the latest checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", default=None, dest="overwrite",
                   help="replace an earlier run in --out (without it an existing run is refused; use --resume to "
                   "continue it)")
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], dest="mixed_precision",
                   help="passed to accelerate; bf16 works on CPU")
    p.add_argument("--no-evaluate", action="store_false", dest="evaluate", default=None)
    p.add_argument("--cpu", action="store_const", const="cpu", dest="device")
    p.add_argument("--quiet", action="store_false", dest="progress", default=None, help="no progress bars")

    p = sub.add_parser("learn", help="learn a policy network for a task (supervised or meta-gradients)")
    _add_config(p)
    _add_task(p)
    p.add_argument("--method", choices=["supervised", "meta"])
    p.add_argument("--out", help="policy directory to write")
    p.add_argument("--backend", choices=["func", "higher", "fd"], help="meta-gradient backend (meta)")
    p.add_argument("--meta-steps", type=int, help="number of meta-steps (meta)")
    p.add_argument("--inner-steps", type=int, help="K differentiable inner steps (meta)")
    p.add_argument("--inner-lr", type=float, help="inner learning rate (meta)")
    p.add_argument("--model", help="LM for meta: preset (briefly pre-trained first) or checkpoint dir")
    p.add_argument("--arch", choices=["mlm", "seq2seq"], help="the LM meta-steps differentiate through and validation "
                   "pre-trains: a masked LM (default) or an encoder-decoder (BART preset or seq2seq checkpoint)")
    p.add_argument("--output", choices=["spans", "full"], help="seq2seq: the decoder target (default spans)")
    p.add_argument("--tokenizer", help="tokenizer of the models the policy will drive (default: --model's "
                   "when a checkpoint, else built from --task)")
    p.add_argument("--classifier", help="supervised, classification task: masked LM fine-tuned as the importance "
                   "classifier (preset or checkpoint; default tiny)")
    p.add_argument("--epochs", type=int, help="epochs (supervised)")
    p.add_argument("--validate-steps", type=int, help="downstream validation: short intermediate pre-training "
                   "steps per candidate policy and for random, from the same start (default 300)")
    p.add_argument("--validate-questions", choices=["train", "eval"],
                   help="questions that score the validation runs (default: train, so that the evaluation "
                   "questions stay unseen by the choice)")
    p.add_argument("--validate-fills", metavar="FILLS", help="comma-separated budget fills tried with every "
                   "candidate, the best (candidate, fill) pair kept and its fill saved with the policy "
                   "(default: none,ranking,random)")
    p.add_argument("--no-validate", action="store_false", dest="validate_enabled", default=None,
                   help="skip the downstream validation (keep the last policy)")
    p.add_argument("--keep-candidates", action="store_true", default=None,
                   help="also save every validated candidate under OUT/candidates/ (for studies of the validation)")
    p.add_argument("--seed", type=int)
    p.add_argument("--data-dir")
    p.add_argument("--max-length", type=int)
    p.add_argument("--quiet", action="store_false", dest="progress", default=None)

    p = sub.add_parser("evaluate", help="evaluate a saved model on a task")
    _add_config(p)
    p.add_argument("--model", help="model directory written by pretrain (out/model)")
    _add_task(p, vocab_size=False)
    p.add_argument("--data-dir")
    p.add_argument("--max-length", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="results JSON (default: MODEL/eval_<task>.json)")
    p.add_argument("--quiet", action="store_false", dest="progress", default=None, help="no progress bars")

    p = sub.add_parser("finetune", help="adapt a model to a task: full fine-tuning, head only, or a weight mask")
    _add_config(p)
    _add_task(p, vocab_size=False)
    p.add_argument("--model", help="masked-LM / encoder checkpoint dir (e.g. a pretrain run's out/model), an offline "
                   f"model ({', '.join(SOURCES)}), or a hub name")
    p.add_argument("--method", choices=["full", "head", "mask"], help="full: every weight trains (default); head: "
                   "frozen body, trained head (linear probe); mask: frozen weights, a learned binary mask per task")
    p.add_argument("--out", help="output directory (results.json; model/ for full, adapter/ for head and mask)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", "--lr", type=float, help="full fine-tuning (default 1e-4)")
    p.add_argument("--head-learning-rate", "--head-lr", type=float, help="the head under head and mask (default 1e-3)")
    p.add_argument("--max-train-examples", type=int)
    p.add_argument("--max-length", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--pattern", help="mask: regular expression over nn.Linear names (default: attention "
                   "query/key/value/output and both feed-forward layers of every layer)")
    p.add_argument("--tau", type=float, help="mask: threshold on the scores (default 0.01)")
    p.add_argument("--initial-sparsity", type=float, help="mask: share of weights masked at the start (default 0.05)")
    p.add_argument("--score-learning-rate", "--score-lr", type=float, help="mask: Adam on the scores (default 1e-4)")
    p.add_argument("--frozen-head", action="store_false", dest="train_head", default=None,
                   help="mask: keep the head as it starts (only the mask learns)")
    p.add_argument("--bake", action="store_true", default=None, help="mask: also write OUT/baked/, an ordinary "
                   "model directory with the mask applied (plain from_pretrained loads it)")
    p.add_argument("--tokenizer", help="tokenizer dir (default: the model's)")
    p.add_argument("--data-dir")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an earlier run in --out")
    p.add_argument("--quiet", action="store_false", dest="progress", default=None, help="no progress bars")

    p = sub.add_parser("show", help="show a policy's mask probabilities over a text")
    _add_config(p)
    p.add_argument("--policy")
    p.add_argument("--policy-option", action="append", metavar="KEY=VALUE")
    p.add_argument("--text")
    p.add_argument("--tokenizer", help="tokenizer dir / vocab file (default: the model's, else built from --task)")
    p.add_argument("--model", help="take the tokenizer of this model directory")
    _add_task(p)  # --task: build the tokenizer from this task (default synthetic)
    p.add_argument("--data-dir")
    p.add_argument("--rate", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--deterministic", action="store_true", default=None)
    p.add_argument("--fill", choices=["none", "ranking", "random"],
                   help="how the sampled mask fills the budget beyond the selected tokens (default: the fill a "
                   "learned policy was validated with, else none)")
    p.add_argument("--png", help="also write a heatmap PNG here")
    p.add_argument("--passages", type=int, metavar="N", help="with --task, instead of --text: the task's first N "
                   "corpus passages as pre-training sees them, gold-span tokens marked g (salient_span masks them)")
    p.add_argument("--max-length", type=int, help="tokens kept of --text (default 512) or of each passage "
                   "(--passages; default pretrain's, 64)")

    p = sub.add_parser("pmi", help="build a PMI n-gram table from a task corpus (for --policy pmi)")
    _add_config(p)
    _add_task(p)
    p.add_argument("--tokenizer")
    p.add_argument("--data-dir")
    p.add_argument("--max-length", type=int)
    p.add_argument("--max-n", type=int)
    p.add_argument("--min-count", type=int)
    p.add_argument("--top-k", type=int)
    p.add_argument("--out", help="table JSON file")

    p = sub.add_parser("bench", help="run a benchmark suite and print its table")
    _add_config(p)
    p.add_argument("--suite", help="quickstart (default) | synthetic | real | perf | weightmask | seq2seq | family")
    p.add_argument("--data-dir", help="real: the data directory (default $MASKPOLICY_DATA_DIR, laid out as ../shared/data)")
    p.add_argument("--quick", action="store_true", default=None, help="the suite's small preset (about 5 minutes on 2 CPU cores)")
    p.add_argument("--preset", choices=["full", "quick", "gpu", "pretrained"], help="sizes: full (default), quick "
                   "(= --quick), gpu (synthetic, real: larger runs for a GPU), pretrained (real: from the offline "
                   "minilm-l6 encoder; with --quick its small form)")
    p.add_argument("--seeds", type=int, help="number of seeds (0..N-1; default: the suite's)")
    p.add_argument("--steps", type=int, help="intermediate steps per cell (default: the suite's)")
    p.add_argument("--transfer-seeds", type=int, help="synthetic, real: the transfer matrix on the first N seeds "
                   "(default: the preset's, 1 for full; 0: none)")
    p.add_argument("--no-seq2seq", action="store_false", dest="seq2seq", default=None,
                   help="synthetic, real: skip the seq2seq (BART) section, the longest part of the full presets "
                   "(synthetic: --suite seq2seq runs it alone)")
    p.add_argument("--workers", type=int, help="cells run in this many one-thread processes (default 2)")
    p.add_argument("--out", help="output directory (default runs/SUITE); finished cells there are reused")
    p.add_argument("--policies", help="quickstart: comma-separated policies")
    p.add_argument("--task", help="quickstart: the task")
    p.add_argument("--seed", type=int, help="quickstart: the seed")
    p.add_argument("--quiet", action="store_false", dest="progress", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as done:  # --help: argparse printed it (errors raise UsageError instead)
            return done.code if isinstance(done.code, int) else 0
        from maskpolicy.train.progress import library_progress_bars  # imports the training stack: not for --help

        with library_progress_bars(show=getattr(args, "progress", None) is not False):
            return int(getattr(commands, args.command)(args) or 0)
    except MaskpolicyError as err:
        print(f"maskpolicy: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("maskpolicy: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
