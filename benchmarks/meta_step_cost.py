"""Cost of one meta-step (hypergradient, K=1 SGD) against one plain MLM training step.

A randomly initialised BERT (vocab 8000, float32, eager attention, dropout 0.1 as in
training, ``train()`` mode) gets random batches: an inner MLM batch [batch x length] with
~15% of the real tokens labelled, soft per-token weights in (0, 1), and an outer cloze batch
[16 x 32] with one labelled answer per row. Methods: ``plain`` (forward + backward + AdamW
step with HF's own MLM loss, i.e. logits at every position, as training runs today),
``plain*`` (the same with the vocabulary projection only at labelled positions, which is how
the meta-steps compute their losses, see ``maskpolicy.meta.inner.per_token_loss``) and the three
hypergradient backends. Measured:

* time -- median over ``--repeats`` rounds after one warm-up round; in every round each
  method runs once, interleaved, so that machine noise hits them all alike;
* peak memory of one step beyond the resident model + batches (+ optimizer state, for the
  plain steps: it is part of their cost). GPU: ``torch.cuda.max_memory_allocated`` minus
  ``memory_allocated`` before the step. CPU: torch has no CPU peak counter and ``tracemalloc``
  does not see torch's allocations, so each method runs in a fresh subprocess that, once the
  model and batches are built, hands freed heap back to the OS (``malloc_trim(0)``), resets the
  kernel's peak-RSS mark (``/proc/self/clear_refs`` <- 5) and reports ``VmHWM`` after one step
  minus ``VmRSS`` before it: the step's peak resident memory as the kernel tracks it (torch's
  CPU tensors come from plain malloc). Where ``clear_refs`` is not writable it falls back to
  the growth of ``getrusage`` ``ru_maxrss``, which under-counts (memory freed while building
  the model is reused first) and says so;
* how far the ``fd`` estimate is from the exact ``func`` hypergradient on this model: dropout
  off for the default step and a few others, then dropout on with both backends started from
  the same random state (``fd`` replays the inner forward's dropout masks).

    python -m maskpolicy.benchmarks.meta_step_cost --layers 2 --hidden 128 --batch 8 --length 64
    python -m maskpolicy.benchmarks.meta_step_cost            # 4 layers, hidden 256, batch 16 x 128
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import math
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM

from maskpolicy.meta.hypergrad import InnerConfig, hypergradient, prepare_for_meta
from maskpolicy.meta.inner import per_token_loss

# "plain*" is the plain step with the vocabulary projection only at labelled positions (as the
# meta-steps compute it, see maskpolicy.meta.inner.per_token_loss): the ratios to "plain" compare with
# training as it runs today (HF's loss, full logits), those to "plain*" with an equally lean step.
METHODS = ("plain", "plain*", "func", "higher", "fd")
VOCAB, MASK_ID, FIRST_WORD_ID = 8000, 4, 5  # ids below 5: [PAD] [UNK] [CLS] [SEP] [MASK]


def build(args, device: torch.device):
    """(model, inner batch, weights, outer batch), all seeded so every process sees the same."""
    torch.manual_seed(args.seed)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 64), intermediate_size=4 * args.hidden,
        max_position_embeddings=max(512, args.length), hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    )
    lm = prepare_for_meta(BertForMaskedLM(config)).to(device).train()
    gen = torch.Generator().manual_seed(args.seed + 1)
    inner = random_batch(gen, args.batch, args.length, label_rate=0.15)
    outer = random_batch(gen, args.outer_batch, args.outer_length, label_rate=None)
    weights = torch.rand(args.batch, args.length, generator=gen) * 0.98 + 0.01  # [B, T] in (0, 1)
    to = lambda b: {k: v.to(device) for k, v in b.items()}  # noqa: E731
    return lm, to(inner), weights.to(device), to(outer)


def random_batch(gen: torch.Generator, rows: int, length: int, label_rate: float | None) -> dict:
    """[rows, length] ids with [CLS] ... [SEP] and right padding; labelled positions are
    replaced by [MASK]. ``label_rate=None``: exactly one labelled position (a cloze answer)."""
    ids = torch.randint(FIRST_WORD_ID, VOCAB, (rows, length), generator=gen)
    attn = torch.zeros(rows, length, dtype=torch.long)
    labels = torch.full((rows, length), -100)
    for r in range(rows):
        n = int(torch.randint(length // 2, length + 1, (1,), generator=gen))  # real tokens incl. specials
        ids[r, 0], ids[r, n - 1], ids[r, n:] = 2, 3, 0
        attn[r, :n] = 1
        inside = torch.arange(1, n - 1)
        if label_rate is None:
            chosen = inside[torch.randint(len(inside), (1,), generator=gen)]
        else:
            chosen = inside[torch.rand(len(inside), generator=gen) < label_rate]
            if len(chosen) == 0:
                chosen = inside[:1]
        labels[r, chosen] = ids[r, chosen]
        ids[r, chosen] = MASK_ID
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def make_steps(lm, inner, weights, outer, lr: float) -> dict:
    """Zero-argument callables, one per method. The plain step trains its own copy of the model."""
    plain_lm = copy.deepcopy(lm)
    opt = torch.optim.AdamW(plain_lm.parameters(), lr=1e-4)
    cfg = InnerConfig(steps=1, lr=lr, optimizer="sgd")

    def plain():
        loss = plain_lm(**inner).loss  # HF's own masked-LM loss: forward + mean CE
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    lean_lm = copy.deepcopy(lm)
    lean_opt = torch.optim.AdamW(lean_lm.parameters(), lr=1e-4)
    n_labelled = int((inner["labels"] != -100).sum())

    def lean():
        (per_token_loss(lean_lm, None, inner).sum() / n_labelled).backward()
        lean_opt.step()
        lean_opt.zero_grad(set_to_none=True)

    steps = {"plain": plain, "plain*": lean}
    for backend in METHODS[2:]:
        steps[backend] = lambda b=backend: hypergradient(lm, inner, weights, outer, cfg, backend=b)
    return steps


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(steps: dict, repeats: int, device: torch.device) -> dict[str, float]:
    """Median milliseconds per step, methods interleaved within each round."""
    for step in steps.values():  # warm-up: allocator pools, lazy inits, imports (higher)
        step()
    ms = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            ms[name].append(1e3 * (time.perf_counter() - start))
    return {name: statistics.median(v) for name, v in ms.items()}


def peak_mb_cuda(steps: dict, device: torch.device) -> dict[str, float]:
    out = {}
    for name, step in steps.items():
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        out[name] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return out


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def probe(args) -> None:
    """Subprocess entry: peak resident-memory growth of one ``args.probe`` step (CPU), as JSON."""
    lm, inner, weights, outer = build(args, torch.device("cpu"))
    step = make_steps(lm, inner, weights, outer, args.lr)[args.probe]
    if args.probe == "higher":
        import higher  # noqa: F401  (importing the module is not part of the step's memory)
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc: return freed heap pages to the OS
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
        before_kb, how = _status_kb("VmRSS"), "VmHWM"
    except OSError:
        before_kb, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss (under-counts)"
    step()
    after_kb = _status_kb("VmHWM") if how == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mb": (after_kb - before_kb) / 1024, "how": how}))


def peak_mb_cpu(args) -> tuple[dict[str, float], str]:
    out = {}
    for name in METHODS:
        cmd = [sys.executable, "-m", "maskpolicy.benchmarks.meta_step_cost", *sys.argv[1:], "--probe", name]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        report = json.loads(done.stdout.strip().splitlines()[-1])
        out[name], how = report["peak_mb"], report["how"]
    return out, how


def fd_deviation(lm, inner, weights, outer, lr: float) -> list[dict]:
    """fd against exact func (K=1 SGD): dropout off for the default step and a few others
    (``step`` = L2 norm of the parameter perturbation eps * v; default 1e-2), then dropout on
    with both backends started from the same random state (fd replays the inner masks)."""
    cfg = InnerConfig(steps=1, lr=lr)
    rows = []
    for mode in ("eval", "train"):
        model = copy.deepcopy(lm).train(mode == "train")
        torch.manual_seed(123)
        exact = hypergradient(model, inner, weights, outer, cfg, backend="func")
        v_norm = _outer_grad_norm(model.eval(), outer, exact.updated)
        model.train(mode == "train")
        for step in ((None, 1e-1, 3e-2, 3e-3, 1e-3, 1e-4) if mode == "eval" else (None,)):
            torch.manual_seed(123)
            eps = None if step is None else step / v_norm
            est = hypergradient(model, inner, weights, outer, cfg, backend="fd", fd_eps=eps).grad
            rows.append({
                "dropout": "off" if mode == "eval" else "on (same seed)",
                "step": "default (1e-2)" if step is None else f"{step:g}",
                "cosine": float(F.cosine_similarity(est.flatten().double(), exact.grad.flatten().double(), dim=0)),
                "rel_l2": float((est - exact.grad).double().norm() / exact.grad.double().norm()),
            })
    return rows


def _outer_grad_norm(lm, outer, phi: dict) -> float:
    leaves = {n: t.clone().requires_grad_() for n, t in phi.items()}
    loss = per_token_loss(lm, leaves, outer).sum() / int((outer["labels"] != -100).sum())
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads if g is not None))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--outer-batch", type=int, default=16)
    ap.add_argument("--outer-length", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3, help="inner SGD learning rate")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--probe", choices=METHODS, help=argparse.SUPPRESS)  # internal: CPU memory subprocess
    args = ap.parse_args()
    if args.probe:
        return probe(args)

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    lm, inner, weights, outer = build(args, device)
    n_params = sum(p.numel() for p in lm.parameters())
    print(f"BERT {args.layers} layers, hidden {args.hidden}, {n_params / 1e6:.1f}M parameters, {device} "
          f"({torch.get_num_threads()} threads); inner {args.batch}x{args.length}, outer "
          f"{args.outer_batch}x{args.outer_length}; meta-step = K=1 SGD (lr {args.lr}), all parameters")
    steps = make_steps(lm, inner, weights, outer, args.lr)
    ms = time_steps(steps, args.repeats, device)
    if device.type == "cuda":
        mem, probe_name = peak_mb_cuda(steps, device), "torch.cuda.max_memory_allocated"
    else:
        del steps
        mem, how = peak_mb_cpu(args)
        probe_name = f"{how} growth in a fresh subprocess per method"

    print(f"\n{'method':<8} {'ms/step':>9} {'x plain':>8} {'x plain*':>9} {'peak MB':>9} {'x plain':>8} {'x plain*':>9}")
    for name in METHODS:
        print(f"{name:<8} {ms[name]:>9.1f} {ms[name] / ms['plain']:>8.2f} {ms[name] / ms['plain*']:>9.2f} "
              f"{mem[name]:>9.1f} {mem[name] / mem['plain']:>8.2f} {mem[name] / mem['plain*']:>9.2f}")
    print(f"(median of {args.repeats} after a warm-up; peak memory: {probe_name}, beyond model + batches;\n"
          " plain = forward + backward + AdamW step with HF's loss; plain* = the same with the vocabulary\n"
          " projection only at labelled positions, as the meta-steps do)")

    dev = fd_deviation(lm, inner, weights, outer, args.lr)
    print("\nfd vs exact func hypergradient (K=1 SGD), by parameter step ||eps v||:")
    for row in dev:
        print(f"  dropout {row['dropout']:<15} step {row['step']:<15} cosine {row['cosine']:.6f}   "
              f"relative L2 {row['rel_l2']:.3e}")
    print(f"goals: func <= 2.5x plain ({ms['func'] / ms['plain']:.2f}x; {ms['func'] / ms['plain*']:.2f}x plain*), "
          f"fd <= 2x ({ms['fd'] / ms['plain']:.2f}x; {ms['fd'] / ms['plain*']:.2f}x plain*)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "probe"}, "device": str(device),
                       "parameters": n_params, "ms": ms, "peak_mb": mem, "fd_vs_exact": dev}, fh, indent=2)


if __name__ == "__main__":
    main()
