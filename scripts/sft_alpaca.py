"""Supervised fine-tuning with LoRA on instruction data (alpaca / messages / ShareGPT).

    python -m scripts.sft_alpaca --config configs/sft_alpaca.yaml
    python -m scripts.sft_alpaca --config configs/sft_alpaca.yaml --max_steps 5 --lora_r 8
    papermill notebooks/sft_alpaca.ipynb out.ipynb -f configs/sft_alpaca.yaml

Defaults are the CPU demo: the embedded SmolLM2-135M, the bundled sample, a few
dozen steps. The same Params on a GPU config (configs/sft_alpaca_gpu.yaml) train
a real model with Unsloth. Each run writes to $LAB_OUTPUT_DIR/sft_alpaca/<run_name>/:
adapter/, checkpoints/, tensorboard/, params.json, metrics.json, history.json,
training.png, generations.md/.csv, skipped_rows.csv, run_complete.json.

Multi-GPU (DDP, DeepSpeed, FSDP) needs no change here, only a launcher:
    torchrun --nproc_per_node 2 -m scripts.sft_alpaca --config configs/sft_alpaca_gpu.yaml
    accelerate launch --config_file configs/accelerate/ddp.yaml -m scripts.sft_alpaca --config ...
Every rank trains; only the main one creates the run folder and writes files.
"""

from dataclasses import dataclass

import pandas as pd

from data_loaders.alpaca import load_chat_file
from data_loaders.common import split_heldout
from lab_utils.core.artifacts import setup_logging, write_table
from lab_utils.models.chat import check_model_thinking, generate
from lab_utils.core.config import run_cli
from lab_utils.core.distributed import is_main_process
from lab_utils.core.paths import find_data_file
from lab_utils.training.params import LoraSFTParams
from lab_utils.training.runs import finish_run, open_run, save_training_artifacts
from lab_utils.training.lora import load_lora_model
from lab_utils.training.batching import tokenize_dataset
from lab_utils.training.trainer import train_lora

EXPERIMENT = "sft_alpaca"


@dataclass(kw_only=True)
class Params(LoraSFTParams):
    # data (the model, LoRA, optimisation, evaluation and run knobs: lab_utils.training.params's shared groups)
    data_file: str = "alpaca_sample.jsonl"  # under LAB_DATA_DIR or data/samples/
    system_prompt: str = ""  # added to every conversation that has none ("" = the model's default)
    max_rows: int = 0  # 0 = every row
    heldout_rows: int = 8  # kept out of training: eval loss and before/after answers


# Every experiment has the same steps, in this order (tests/test_experiment_steps.py checks it):
# load_data, setup_run, load_model, build_dataset, evaluate, train, save_artifacts, run, main.

def load_data(p: Params):
    """(train conversations, held-out conversations, skip report): read and split before any run folder exists."""
    check_model_thinking(p.model, p.enable_thinking)  # a template without the switch: one line, no run folder
    dataset, report = load_chat_file(p.data_file, system_prompt=p.system_prompt or None, limit=p.max_rows or None)
    train_rows, heldout = split_heldout(dataset, p.heldout_rows, p.seed, find_data_file(p.data_file))
    return train_rows, heldout, report


def setup_run(p: Params):
    return open_run(EXPERIMENT, p)


def load_model(p: Params):
    return load_lora_model(p)


def build_dataset(p: Params, data, tokenizer):
    """(train tokens, held-out conversations, skip report)."""
    train_rows, heldout, report = data
    train_tokens = tokenize_dataset(train_rows, tokenizer, p.max_seq_length, report)
    print(f"[lab] {p.data_file}: {report.summary()}; {len(train_tokens)} train, {len(heldout)} held out")
    return train_tokens, heldout, report


def evaluate(p: Params, model, tokenizer, heldout) -> list[str]:
    """Greedy answers to the held-out prompts (before and after training)."""
    return generate(model, tokenizer, heldout["messages"], max_new_tokens=p.max_new_tokens)


def train(p: Params, model, tokenizer, train_tokens, heldout, run, backend) -> dict:
    eval_tokens = tokenize_dataset(heldout, tokenizer, p.max_seq_length)
    return train_lora(p, model, tokenizer, train_tokens, eval_tokens, run, backend,
                      sample_conversations=heldout["messages"][:2])


def save_artifacts(p: Params, run, model, tokenizer, outcome: dict, table: pd.DataFrame, report, backend) -> dict:
    metrics = save_training_artifacts(p, run, model, tokenizer, outcome, report, backend)
    if is_main_process():  # one rank writes (DDP)
        write_table(table, run, "generations")
    finish_run(run, EXPERIMENT, metrics, headline=("train_loss",))
    return metrics


def run(p: Params) -> dict:
    data = load_data(p)
    run_path = setup_run(p)
    model, tokenizer, backend = load_model(p)
    train_tokens, heldout, report = build_dataset(p, data, tokenizer)
    before = evaluate(p, model, tokenizer, heldout)
    outcome = train(p, model, tokenizer, train_tokens, heldout, run_path, backend)
    after = evaluate(p, model, tokenizer, heldout)
    table = generations_table(heldout, before, after)
    metrics = save_artifacts(p, run_path, model, tokenizer, outcome, table, report, backend)
    print(f"[lab] done: {run_path}")
    return {"run_dir": str(run_path), "metrics": metrics, "generations": table}


def generations_table(heldout, before: list[str], after: list[str]) -> pd.DataFrame:
    return pd.DataFrame({
        "prompt": [m[-2]["content"] for m in heldout["messages"]],
        "reference": [m[-1]["content"] for m in heldout["messages"]],
        "before": before,
        "after": after,
    })


def main(argv=None):
    setup_logging()
    result = run_cli(run, Params, argv, description=__doc__)
    print(result["generations"].head(3).to_string(index=False))


if __name__ == "__main__":
    main()
