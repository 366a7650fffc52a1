"""SFT throughput: the lab's training path vs a plain TRL SFTTrainer with default settings.

    python -m benchmarks.sft_throughput                       # embedded model, bundled sample, CPU
    LAB_DATA_DIR=../shared/data python -m benchmarks.sft_throughput --data_file gpteacher-roleplay/roleplay-simple-deduped-roleplay-dataset.json

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
"""

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback


class StepTimer(TrainerCallback):
    """Wall time and real tokens between the end of warm-up and the end of training."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.tokens0, self.end, self.tokens1 = warmup, None, 0, None, 0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start, self.tokens0 = time.perf_counter(), state.num_input_tokens_seen
        self.end, self.tokens1 = time.perf_counter(), state.num_input_tokens_seen

    def tokens_per_second(self) -> float:
        return (self.tokens1 - self.tokens0) / (self.end - self.start)


def conversations(data_file: str, rows: int, seed: int):
    from data_loaders.alpaca import load_chat_file

    dataset, _ = load_chat_file(data_file, limit=rows)
    return dataset.shuffle(seed=seed).select_columns(["messages"])


def lab_params(a, precision: str):
    from lab_utils.training.params import LoraSFTParams

    return LoraSFTParams(model=a.model, lora_r=a.lora_r, lora_alpha=2 * a.lora_r, batch_size=a.batch_size, max_steps=a.steps,
                  max_seq_length=a.max_length, learning_rate=1e-4, warmup_ratio=0.0, precision=precision,
                  report_to="none", save_steps=10_000, logging_steps=10_000, run_name="bench", overwrite=True)


def run_lab(a, dataset, out: Path, precision: str) -> dict:
    from data_loaders.common import SkipReport
    from lab_utils.core.backend import get_backend
    from lab_utils.training.lora import build_lora_model
    from lab_utils.training.trainer import make_trainer
    from lab_utils.training.batching import tokenize_dataset

    p = lab_params(a, precision)
    backend = get_backend("hf")
    model, tokenizer = build_lora_model(p, backend)
    tokens = tokenize_dataset(dataset.add_column("source", ["bench"] * len(dataset)), tokenizer, p.max_seq_length,
                              SkipReport(kept=len(dataset)))
    trainer, _ = make_trainer(p, model, tokenizer, tokens, None, out / f"lab-{precision}", backend)
    return timed(trainer, a.warmup)


def run_trl(a, dataset, out: Path) -> dict:
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
    lora = LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r, target_modules=lora_target_modules(model), task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    return timed(trainer, a.warmup)


def timed(trainer, warmup: int) -> dict:
    timer = StepTimer(warmup)
    trainer.add_callback(timer)
    result = trainer.train()
    stats = {"tokens_per_second": round(timer.tokens_per_second(), 1), "train_loss": round(result.training_loss, 4),
             "timed_tokens": timer.tokens1 - timer.tokens0, "timed_seconds": round(timer.end - timer.start, 2)}
    del trainer
    gc.collect()
    return stats


def main(argv=None):
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


if __name__ == "__main__":
    main()
