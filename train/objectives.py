"""What the pre-training loop optimises, by architecture (``PretrainConfig.arch``).

- ``mlm``: a masked LM (BERT-style); the policy's mask is corrupted 80/10/10 and the loss
  is the MLM cross-entropy at the masked positions.
- ``seq2seq``: an encoder-decoder (BART, T5); the policy's mask becomes span corruption
  (``policies.seq2seq_collator``) and the loss is the decoder's cross-entropy on the
  target, the masked spans or the full sentence (``PretrainConfig.output``).

The loop (``pretrain.py``) is the same for both: it asks the objective for the model,
the loss of a padded batch and the evaluations.
"""
from __future__ import annotations

import torch

from maskpolicy.policies import Masker
from maskpolicy.policies.seq2seq_collator import Seq2SeqMaskingCollator
from maskpolicy.tasks.base import Task

from .config import PretrainConfig
from .evaluate import evaluate_task
from .head import masked_lm_loss
from .models import LoadReport, is_preset, load_masked_lm_reporting, preset_model


class MaskedLMObjective:
    arch = "mlm"

    def __init__(self, config: PretrainConfig, policy, tokenizer) -> None:
        self.config, self.masker, self.head = config, Masker(policy, config.masking), None

    def build_model(self, tokenizer) -> tuple[object, LoadReport]:
        config = self.config
        if is_preset(config.model):
            return preset_model(config.model, len(tokenizer), config.max_length, tokenizer.pad_token_id,
                                **config.model_options), LoadReport()
        return load_masked_lm_reporting(config.model)

    def attach(self, model) -> None:
        """``model``: the unwrapped model (the vocabulary projection runs at masked positions only)."""
        self.head = model.get_output_embeddings()

    def loss(self, model, batch: dict, generator: torch.Generator) -> torch.Tensor:
        return masked_lm_loss(model, self.masker(batch, generator=generator), self.head)

    def evaluate(self, model, tokenizer, task: Task, *, quick: bool, progress: bool = False) -> dict:
        config = self.config
        return evaluate_task(model, tokenizer, task, max_length=config.max_length, quick=quick,
                             finetune=None if quick else config.finetune, seed=config.seed, progress=progress)


class Seq2SeqObjective:
    arch = "seq2seq"

    def __init__(self, config: PretrainConfig, policy, tokenizer) -> None:
        self.config, self.tokenizer = config, tokenizer
        masking = config.masking
        self.collator = Seq2SeqMaskingCollator(tokenizer, policy, output=config.output or "spans",
                                               mlm_probability=masking.rate, deterministic=masking.deterministic,
                                               fill=masking.fill)

    def build_model(self, tokenizer) -> tuple[object, LoadReport]:
        from .seq2seq_models import is_seq2seq_preset, load_seq2seq_reporting, preset_seq2seq_model

        config = self.config
        if is_seq2seq_preset(config.model) or is_preset(config.model):  # a BERT-only preset name: a clear error
            return preset_seq2seq_model(config.model, tokenizer, config.max_length, **config.model_options), LoadReport()
        return load_seq2seq_reporting(config.model)

    def attach(self, model) -> None:
        self.collator.model = model  # decoder_input_ids made as the model makes them

    def loss(self, model, batch: dict, generator: torch.Generator) -> torch.Tensor:
        return model(**self.collator.corrupt(batch, generator)).loss

    def evaluate(self, model, tokenizer, task: Task, *, quick: bool, progress: bool = False) -> dict:
        from .seq2seq_evaluate import denoising_metrics

        held_out = task.eval_corpus or task.corpus[: max(1, min(512, len(task.corpus) // 10))]
        config = self.config
        metrics = denoising_metrics(model, tokenizer, held_out, output=self.collator.output, max_length=config.max_length)
        metrics["score"] = metrics["denoise_accuracy"]
        if task.kind != "cloze":
            return metrics
        # Along the run (the compute curves): the evaluation questions read as denoising,
        # the answer one masked span (no fine-tuning; cheap at every evaluation).
        from .seq2seq_evaluate import seq2seq_cloze_metrics

        cloze = seq2seq_cloze_metrics(model, tokenizer, task.eval, output=self.collator.output,
                                      max_length=config.max_length)
        metrics.update(cloze)
        if quick:
            return metrics
        # Closed-book QA by generation: fine-tuned on the training questions, answers
        # generated for the evaluation questions (``PretrainConfig.qa``).
        from .generation_qa import evaluate_generation_qa

        qa = evaluate_generation_qa(model, tokenizer, task.train, task.eval, config.qa, max_length=config.max_length,
                                    seed=config.seed, progress=progress)
        return {**metrics, **qa, "score": qa["qa_em"]}


OBJECTIVES = {"mlm": MaskedLMObjective, "seq2seq": Seq2SeqObjective}


def load_trained(arch: str, path: str):
    """The model a run of ``arch`` ("mlm" | "seq2seq") saved at ``path`` (or any checkpoint
    of that kind)."""
    if arch == "seq2seq":
        from .seq2seq_models import load_seq2seq_reporting

        return load_seq2seq_reporting(path)[0]
    from .models import load_masked_lm

    return load_masked_lm(path)


def is_arch_preset(arch: str, name: str) -> bool:
    """Whether ``name`` is a size preset of ``arch`` (else a checkpoint or hub name)."""
    from .seq2seq_models import is_seq2seq_preset

    return is_seq2seq_preset(name) if arch == "seq2seq" else is_preset(name)


def objective_for(config: PretrainConfig, policy, tokenizer):
    return OBJECTIVES[config.arch](config, policy, tokenizer)
