"""SFT throughput and memory: the lab's training path against TRL, in two modes.

    python -m benchmarks.sft_throughput                  # compare: embedded model, bundled sample, CPU
    LAB_DATA_DIR=../shared/data python -m benchmarks.sft_throughput \\
        --data_file gpteacher-roleplay/roleplay-simple-deduped-roleplay-dataset.json
    python -m benchmarks.sft_throughput --sweep          # GPU: 4 models x {16-bit LoRA, 4-bit QLoRA} x 3 backends
    python -m benchmarks.sft_throughput --sweep --models qwen2.5-1.5b --quants qlora4 --out
    python -m benchmarks.sft_throughput --sweep --lengths natural --models qwen2.5-1.5b qwen2.5-7b --quants qlora4
    python -m benchmarks.sft_throughput --sweep --lengths natural --data_file medical/dialogues_gbk.csv
    python -m benchmarks.sft_throughput --sweep --smoke  # CPU, seconds: proves the sweep's harness

Both modes build the lab's trainer the same way (`lab_trainer`: the SFT experiments' own
make_trainer) and time it with the same per-step timer (`step_timer`).

Compare (default).
Both train the same LoRA (same model, rows, batch size, max length, steps,
learning rate) and are timed in one process, one after the other. Throughput
is *real* tokens per second: tokens of the conversations, padding excluded,
counted by the trainers themselves (`num_input_tokens_seen`, non-padding) over
the timed steps (the first `--warmup` steps are not timed). The ratio is lab / TRL.

What differs is only what each does by default:
  TRL SFTTrainer  pads each random batch to its longest row; gradient checkpointing
                  on; bf16 autocast; loss over all tokens in chunks.
  lab             padding-free packed rows (no pad compute, no cross-talk), the
                  vocabulary head only at assistant-token positions, no checkpointing
                  for a model this size, precision "auto" (bf16 autocast where the CPU
                  has native bf16, as TRL's default does). The lab is also run in fp32 to
                  show how much of the gain is precision and how much is less work.

Sweep (--sweep).

Backends, each given the same rows, sequence length, batch, steps and LoRA settings:
    trl          AutoModelForCausalLM + TRL SFTTrainer(peft_config=LoraConfig): what most tutorials do
    lab-hf       the lab's hf backend: lab_utils.training.lora.build_lora_model + LabTrainer (padding-free,
                 loss only at label positions), exactly as the SFT experiments build them (lab_utils.training.params)
    lab-unsloth  the lab's Unsloth backend: FastLanguageModel + the same script's Trainer

--lengths fixed (default): every row is exactly seq_len tokens (conversations from the
bundled sample laid end to end, assistant tokens labelled), so each step trains
batch x seq_len tokens on every backend: a like-for-like kernel comparison.
--lengths natural: each row is one conversation at its own length (--data_file: the
bundled alpaca sample, a medical CSV, or any chat file; truncated at seq_len), the
same rows for every backend. That is real SFT data: TRL's defaults pad each batch to
its longest row; the lab's padding-free batches compute no padding. tokens_per_s then
counts real (non-padding) tokens only (Trainer's include_num_input_tokens_seen="non_padding").

mfu_pct (model FLOPs utilisation) = tokens_per_s * FLOPs per token / the GPU's dense bf16
peak (989 TFLOP/s for H100/H200 SXM), with FLOPs per token for LoRA = 4 * N_linear +
4 * layers * hidden * context: 2 FLOPs per weight forward and as much again for the
activation gradients (frozen weights need no weight gradients; full fine-tuning would
be 6 * N), N_linear = every nn.Linear weight incl. lm_head, context = the token-weighted
mean row length. Recomputation (checkpointing) is not counted (lab_utils/models/random_models.py).

tokens/s counts the steps after --warmup_steps; peak memory is
torch.cuda.max_memory_allocated for the whole case (weights + training), each case
in its own process. Ratios are against `trl` in the same run. Models are the real
shapes with random weights (lab_utils/models/random_models.py): speed and memory, not quality.
"""

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (GPU_MODELS, SMOKE_MODEL, ensure_random_model, fixed_length_rows, gpu_name,
                               lora_flops_per_token, mfu_percent, natural_length_rows,
                               peak_memory_gib, ratio, report, reset_peak_memory,
                               run_case, skip_reasons, steady_rate, synchronize)


# ---------------------------------------------------------------- shared by both modes

def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time and real tokens seen so far at the end of every optimizer step (after the GPU finished it)."""

        def __init__(self):
            self.times, self.tokens = [], []

        def on_step_end(self, args, state, control, **kwargs):
            synchronize()
            self.times.append(time.perf_counter())
            self.tokens.append(state.num_input_tokens_seen)

    return StepTimer()


def real_token_rate(timer, warmup_steps: int) -> float | None:
    """Real (non-padding) tokens per second over the steps after the warm-up ones."""
    times, tokens = timer.times[warmup_steps:], timer.tokens[warmup_steps:]
    if len(times) < 2:
        return None
    return round((tokens[-1] - tokens[0]) / (times[-1] - times[0]), 1)


def lab_trainer(p, rows, out_dir):
    """The lab's SFT trainer for LoraSFTParams `p` on tokenized rows, built as the SFT experiments build it."""
    from datasets import Dataset

    from lab_utils.training.lora import load_lora_model
    from lab_utils.training.trainer import make_trainer

    model, tokenizer, backend = load_lora_model(p)
    rows = Dataset.from_list(rows) if isinstance(rows, list) else rows
    trainer, _ = make_trainer(p, model, tokenizer, rows, None, Path(out_dir), backend)
    return trainer


# ---------------------------------------------------------------- compare: lab vs TRL defaults, one process

def conversations(data_file: str, rows: int, seed: int):
    from data_loaders.alpaca import load_chat_file

    dataset, _ = load_chat_file(data_file, limit=rows)
    return dataset.shuffle(seed=seed).select_columns(["messages"])


def run_lab(a, dataset, out: Path, precision: str) -> dict:
    from data_loaders.common import SkipReport
    from lab_utils.models.registry import load_tokenizer, resolve_model
    from lab_utils.training.batching import tokenize_dataset
    from lab_utils.training.params import LoraSFTParams

    p = LoraSFTParams(model=a.model, lora_r=a.lora_r, lora_alpha=2 * a.lora_r, batch_size=a.batch_size,
                      max_steps=a.steps, max_seq_length=a.max_length, learning_rate=1e-4, warmup_ratio=0.0,
                      precision=precision, report_to="none", save_steps=10_000, logging_steps=10_000,
                      run_name="bench", overwrite=True, backend="hf")
    tokens = tokenize_dataset(dataset.add_column("source", ["bench"] * len(dataset)),
                              load_tokenizer(resolve_model(a.model)), p.max_seq_length, SkipReport(kept=len(dataset)))
    return timed(lab_trainer(p, tokens, out / f"lab-{precision}"), a.warmup)


def run_trl(a, dataset, out: Path) -> dict:
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from lab_utils.models.registry import load_tokenizer, lora_target_modules, resolve_model

    source = resolve_model(a.model)
    model = AutoModelForCausalLM.from_pretrained(source)
    tokenizer = load_tokenizer(source)
    config = SFTConfig(output_dir=str(out / "trl"), per_device_train_batch_size=a.batch_size, max_steps=a.steps,
                       max_length=a.max_length, learning_rate=1e-4, report_to=[], save_strategy="no",
                       logging_steps=10_000, disable_tqdm=True, include_num_input_tokens_seen="non_padding",
                       use_cpu=not torch.cuda.is_available())
    lora = LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r, target_modules=lora_target_modules(model),
                      task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    return timed(trainer, a.warmup)


def timed(trainer, warmup: int) -> dict:
    """Train; real tokens/s from the end of step `warmup` to the end of training."""
    timer = step_timer()
    trainer.add_callback(timer)
    result = trainer.train()
    start = warmup - 1  # times[i] is the end of step i + 1
    tokens, seconds = timer.tokens[-1] - timer.tokens[start], timer.times[-1] - timer.times[start]
    stats = {"tokens_per_second": round(tokens / seconds, 1), "train_loss": round(result.training_loss, 4),
             "timed_tokens": tokens, "timed_seconds": round(seconds, 2)}
    del trainer
    gc.collect()
    return stats


def compare_main(argv=None):
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data_file", default="alpaca_sample.jsonl")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skip_fp32", action="store_true", help="only time the lab's default precision")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this JSON file")
    a = parser.parse_args(argv)
    torch.manual_seed(a.seed)
    dataset = conversations(a.data_file, a.rows, a.seed)
    from lab_utils.training.lora import resolve_precision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        trl = run_trl(a, dataset, Path(tmp))
        lab = run_lab(a, dataset, Path(tmp), "auto")
        lab_fp32 = None if a.skip_fp32 else run_lab(a, dataset, Path(tmp), "fp32")
    ratio = lab["tokens_per_second"] / trl["tokens_per_second"]
    print(f"\nSFT throughput, {a.model}, {a.data_file} ({a.rows} rows), batch {a.batch_size}, "
          f"{a.steps} steps ({a.warmup} warm-up), device {device}")
    rows = [("TRL SFTTrainer default", trl), (f"lab (auto = {resolve_precision('auto', device)})", lab)]
    rows += [("lab (fp32)", lab_fp32)] if lab_fp32 else []
    print(f"{'path':<28}{'real tokens/s':>14}{'x TRL':>8}{'loss':>9}")
    for name, r in rows:
        print(f"{name:<28}{r['tokens_per_second']:>14.1f}{r['tokens_per_second'] / trl['tokens_per_second']:>8.2f}"
              f"{r['train_loss']:>9.3f}")
    print(f"ratio lab / TRL: {ratio:.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "trl": trl, "lab": lab, "lab_fp32": lab_fp32,
                                            "ratio": round(ratio, 3)}, indent=2))
    return ratio


# ---------------------------------------------------------------- sweep: random real shapes, one process per case

BACKENDS = ["trl", "lab-hf", "lab-unsloth"]
QUANTS = ["lora16", "qlora4"]  # 16-bit LoRA (fp32 on CPU) | 4-bit NF4 QLoRA (bitsandbytes, CUDA only)
COLUMNS = ["model", "quant", "backend", "precision", "tokens_per_s", "mfu_pct", "peak_gib", "speed_vs_trl",
           "memory_vs_trl", "final_loss", "status"]
LENGTHS = ["fixed", "natural"]


def needs(backend: str, quant: str) -> list[str]:
    required = ["trl"] if backend == "trl" else []
    if backend == "lab-unsloth":
        required += ["cuda", "unsloth"]
    if quant == "qlora4":
        required += ["cuda", "bitsandbytes"]
    return required


# ---------------------------------------------------------------- one case (runs in a child process)

def trl_trainer(model_dir, quant, rows, c, out_dir):
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from lab_utils.models.chat import IGNORE_INDEX
    from lab_utils.models.registry import load_tokenizer, lora_target_modules
    from lab_utils.training.lora import quantization_config

    cuda = torch.cuda.is_available()
    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.bfloat16 if cuda else torch.float32, attn_implementation="sdpa",
        quantization_config=quantization_config(quant == "qlora4", False, "cuda" if cuda else "cpu"),
        device_map={"": 0} if cuda else None)
    dataset = Dataset.from_list([{"input_ids": r["input_ids"],
                                  "completion_mask": [int(t != IGNORE_INDEX) for t in r["labels"]]} for r in rows])
    args = SFTConfig(output_dir=str(out_dir), per_device_train_batch_size=c["batch_size"], max_steps=c["steps"],
                     learning_rate=2e-4, logging_steps=1, save_strategy="no", report_to=[], bf16=cuda, use_cpu=not cuda,
                     max_length=c["seq_len"], packing=False, completion_only_loss=True, seed=0, disable_tqdm=True,
                     gradient_checkpointing=c["gradient_checkpointing"], dataloader_num_workers=0,
                     include_num_input_tokens_seen="non_padding")
    lora = LoraConfig(task_type="CAUSAL_LM", r=c["lora_r"], lora_alpha=2 * c["lora_r"], lora_dropout=0.0,
                      target_modules=lora_target_modules(model.config))
    return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)


def sweep_lab_trainer(model_dir, quant, rows, c, out_dir, backend_name):
    from lab_utils.training.params import LoraSFTParams

    p = LoraSFTParams(model=model_dir, max_seq_length=c["seq_len"], batch_size=c["batch_size"], max_steps=c["steps"],
                          lora_r=c["lora_r"], lora_alpha=2 * c["lora_r"], load_in_4bit=quant == "qlora4",
                          gradient_checkpointing=c["gradient_checkpointing"], report_to="none", save_steps=10**9,
                          warmup_ratio=0.0, backend=backend_name, seed=0,
                          batching="padded" if backend_name == "unsloth" else "padding_free")
    return lab_trainer(p, rows, out_dir)


def train_case(model_dir: str, backend: str, quant: str, seq_len: int, batch_size: int, steps: int,
               warmup_steps: int, lora_r: int, gradient_checkpointing: bool, lengths: str = "fixed",
               data_file: str = "alpaca_sample.jsonl") -> dict:
    """Train one (model, backend, quant) case; tokens/s, peak memory, final loss."""
    if backend == "lab-unsloth":
        from lab_utils.core.backend import import_unsloth

        import_unsloth()  # before transformers/trl build anything: unsloth patches them
    import torch

    from lab_utils.models.registry import load_tokenizer

    reset_peak_memory()
    c = dict(seq_len=seq_len, batch_size=batch_size, steps=steps, lora_r=lora_r,
             gradient_checkpointing=gradient_checkpointing)
    tokenizer = load_tokenizer(model_dir)
    if lengths == "natural":
        rows = natural_length_rows(tokenizer, batch_size * steps, seq_len, data_file)
    else:
        rows = fixed_length_rows(tokenizer, batch_size * steps, seq_len, data_file)
    row_lengths = [len(r["input_ids"]) for r in rows]
    context = sum(n * n for n in row_lengths) / sum(row_lengths)  # token-weighted mean row length
    with tempfile.TemporaryDirectory() as out_dir:
        if backend == "trl":
            trainer = trl_trainer(model_dir, quant, rows, c, out_dir)
        else:
            from pathlib import Path

            trainer = sweep_lab_trainer(model_dir, quant, rows, c, Path(out_dir), backend.removeprefix("lab-"))
        timer = step_timer()
        trainer.add_callback(timer)
        result = trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    if lengths == "natural":
        tokens_per_s = real_token_rate(timer, warmup_steps)
    else:
        tokens_per_s = steady_rate(timer.times, batch_size * seq_len, warmup_steps)
    return {
        "tokens_per_s": tokens_per_s, "mean_row_tokens": round(sum(row_lengths) / len(row_lengths), 1),
        "mfu_pct": mfu_percent(tokens_per_s, lora_flops_per_token(model_dir, context), gpu_name()),
        "peak_gib": peak_memory_gib(), "steps": result.global_step,
        "final_loss": round(losses[-1], 4) if losses else None,
        "precision": "bf16" if torch.cuda.is_available() else "fp32",
    }


# ---------------------------------------------------------------- the sweep (parent process)

def run_cases(a) -> list[dict]:
    rows = []
    for model in a.models:
        model_dir = None
        for quant in a.quants:
            for backend in a.backends:
                row = {"model": model, "quant": quant, "backend": backend}
                skipped = skip_reasons(needs(backend, quant))
                if skipped:
                    rows.append({**row, "status": f"skipped: {skipped}"})
                    print(f"[bench] {model} {quant} {backend}: skipped ({skipped})", flush=True)
                    continue
                model_dir = model_dir or ensure_random_model(model, a.tokenizer)
                payload = dict(model_dir=model_dir, backend=backend, quant=quant, seq_len=a.seq_len,
                               batch_size=a.batch_size, steps=a.steps, warmup_steps=a.warmup_steps, lora_r=a.lora_r,
                               gradient_checkpointing=a.gradient_checkpointing, lengths=a.lengths,
                               data_file=a.data_file)
                print(f"[bench] {model} {quant} {backend}: training {a.steps} steps ...", flush=True)
                outcome = run_case("benchmarks.sft_throughput", "train_case", payload)
                rows.append({**row, **outcome.get("value", {}), "status": outcome["status"]})
    return add_ratios(rows)


def add_ratios(rows: list[dict]) -> list[dict]:
    """speed_vs_trl / memory_vs_trl: each row against the trl row of the same model and quant."""
    base = {(r["model"], r["quant"]): r for r in rows if r["backend"] == "trl" and r["status"] == "ok"}
    for r in rows:
        trl = base.get((r["model"], r["quant"]), {})
        r["speed_vs_trl"] = ratio(r.get("tokens_per_s"), trl.get("tokens_per_s"))
        r["memory_vs_trl"] = ratio(r.get("peak_gib"), trl.get("peak_gib"))
    return rows


def parse_sweep(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", action="store_true", help="this mode (random real shapes, one process per case)")
    parser.add_argument("--smoke", action="store_true", help="tiny 2-layer model, a few short steps (CPU is fine)")
    parser.add_argument("--models", nargs="+", default=GPU_MODELS)
    parser.add_argument("--quants", nargs="+", default=QUANTS, choices=QUANTS)
    parser.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS)
    parser.add_argument("--lengths", choices=LENGTHS, default="fixed",
                        help="fixed: every row seq_len tokens; natural: conversations at their own lengths")
    parser.add_argument("--data_file", default="alpaca_sample.jsonl",
                        help="chat file or medical CSV (bundled or under LAB_DATA_DIR), e.g. medical/dialogues_gbk.csv")
    parser.add_argument("--seq_len", type=int, default=1024, help="row length (fixed) or truncation length (natural)")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup_steps", type=int, default=2, help="steps left out of tokens/s")
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument("--no_gradient_checkpointing", dest="gradient_checkpointing", action="store_false")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder or hub id (default: the embedded SmolLM2)")
    parser.add_argument("--out", nargs="?", const="", default=None,
                        help="write JSON (default folder: benchmarks/results/)")
    a = parser.parse_args(argv)
    if a.smoke:
        a.models, a.batch_size, a.steps, a.warmup_steps, a.lora_r = [SMOKE_MODEL], 2, 4, 1, 4
        # natural rows keep their own length (a medical row is ~400 tokens): the 2-layer model copes on CPU
        a.seq_len = 64 if a.lengths == "fixed" else 512
    return a


def sweep_main(argv=None) -> dict:
    a = parse_sweep(argv)
    rows = run_cases(a)
    shape = (f"{a.lengths} lengths from {a.data_file}, max {a.seq_len}" if a.lengths == "natural"
             else f"seq_len {a.seq_len}")
    return report("sft_throughput", f"LoRA SFT: {shape}, batch {a.batch_size}, {a.steps} steps (first "
                  f"{a.warmup_steps} untimed); tokens_per_s = real tokens", a, rows, COLUMNS)


def main(argv=None):
    """--sweep: the per-case sweep (returns its report); else the compare mode (returns lab / TRL)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return sweep_main(argv) if "--sweep" in argv else compare_main(argv)


if __name__ == "__main__":
    main()
