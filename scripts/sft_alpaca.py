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

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from data_loaders.alpaca import load_chat_file
from data_loaders.common import rows_left, split_heldout
from lab_utils.core.artifacts import setup_logging, write_table
from lab_utils.models.chat import check_model_thinking, generate
from lab_utils.core.config import run_cli
from lab_utils.core.distributed import is_main_process
from lab_utils.core.paths import find_data_file
from lab_utils.training.params import LoraSFTParams
from lab_utils.training.steps import Data, LoadedModel
from lab_utils.training.runs import finish_run, open_run, save_training_artifacts
from lab_utils.training.lora import load_lora_model
from lab_utils.training.batching import load_data_tokenizer, tokenize_dataset
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
# load_data, build_dataset, setup_run, load_model, evaluate, train, save_artifacts, run, main.

def load_data(p: Params) -> Data:
    """Train and held-out conversations and the skip report: read and split before any run folder exists."""
    check_model_thinking(p.model, p.enable_thinking)  # a template without the switch: one line, no run folder
    dataset, report = load_chat_file(p.data_file, system_prompt=p.system_prompt or None, limit=p.max_rows or None)
    train_rows, heldout = split_heldout(dataset, p.heldout_rows, p.seed, find_data_file(p.data_file))
    return Data(train=train_rows, heldout=heldout, report=report)


def build_dataset(p: Params, data: Data) -> Data:
    """The training conversations and the held-out ones (the eval loss's rows) as tokens, by the model's
    tokenizer (the model itself is not needed yet): rows that leave nothing to learn stop here."""
    tokenizer = load_data_tokenizer(p)
    path = find_data_file(p.data_file)
    train_tokens = rows_left(tokenize_dataset(data.train, tokenizer, p.max_seq_length, data.report), path,
                             f"tokenizing (every answer lies beyond max_seq_length={p.max_seq_length})",
                             "raise max_seq_length or use shorter rows")
    eval_tokens = tokenize_dataset(data.heldout, tokenizer, p.max_seq_length)
    print(f"[lab] {p.data_file}: {data.report.summary()}; {len(train_tokens)} train, {len(data.heldout)} held out")
    return replace(data, train=train_tokens, eval_set=eval_tokens if len(eval_tokens) else None)


def setup_run(p: Params) -> Path:
    return open_run(EXPERIMENT, p)


def load_model(p: Params) -> LoadedModel:
    return LoadedModel(*load_lora_model(p))


def evaluate(p: Params, lm: LoadedModel, data: Data) -> list[str]:
    """Greedy answers to the held-out prompts (before and after training)."""
    return generate(lm.model, lm.tokenizer, data.heldout["messages"], max_new_tokens=p.max_new_tokens)


def train(p: Params, lm: LoadedModel, data: Data, run_dir: Path) -> dict:
    return train_lora(p, lm.model, lm.tokenizer, data.train, data.eval_set, run_dir, lm.backend,
                      sample_conversations=data.heldout["messages"][:2])


def save_artifacts(p: Params, run_dir: Path, lm: LoadedModel, data: Data, outcome: dict, table: pd.DataFrame) -> dict:
    metrics = save_training_artifacts(p, run_dir, lm.model, lm.tokenizer, outcome, data.report, lm.backend)
    if is_main_process():  # one rank writes (DDP)
        write_table(table, run_dir, "generations")
    finish_run(run_dir, EXPERIMENT, metrics, headline=("train_loss",))
    return metrics


def run(p: Params) -> dict:
    data = build_dataset(p, load_data(p))
    run_dir = setup_run(p)
    lm = load_model(p)
    before = evaluate(p, lm, data)
    outcome = train(p, lm, data, run_dir)
    after = evaluate(p, lm, data)
    table = generations_table(data.heldout, before, after)
    metrics = save_artifacts(p, run_dir, lm, data, outcome, table)
    print(f"[lab] done: {run_dir}")
    return {"run_dir": str(run_dir), "metrics": metrics, "generations": table}


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
