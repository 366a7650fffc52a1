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

import time
from dataclasses import dataclass

import pandas as pd

from data_loaders.alpaca import load_chat_file
from lab_utils import plots
from lab_utils.artifacts import setup_logging, write_json, write_table
from lab_utils.backend import get_backend
from lab_utils.chat import generate
from lab_utils.config import parse_args, save_params
from lab_utils.distributed import is_main_process, main_process_first
from lab_utils.paths import mark_complete, run_dir
from lab_utils.training import (ChatCollator, LabTrainer, LossHistory, evaluate_before_training, last_checkpoint,
                                load_model as load_lora_model, tokenize_dataset, trainable_parameters)

EXPERIMENT = "sft_alpaca"


@dataclass(kw_only=True)
class Params:
    # model and data
    model: str = "smollm2-135m"  # registry name, local folder or hub id
    data_file: str = "alpaca_sample.jsonl"  # under LAB_DATA_DIR or data/samples/
    system_prompt: str = ""  # added to every conversation that has none ("" = the model's default)
    max_rows: int = 0  # 0 = every row
    heldout_rows: int = 8  # kept out of training: eval loss and before/after answers
    max_seq_length: int = 256
    # LoRA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_mlp: bool = True  # also adapt gate/up/down projections
    use_rslora: bool = False  # scale by alpha/sqrt(r): stabler at large r
    use_dora: bool = False  # weight-decomposed LoRA (slower, sometimes better)
    loraplus_lr_ratio: float = 0.0  # > 0: LoRA+ (B learns this many times faster than A)
    load_in_4bit: bool = False  # QLoRA (GPU only)
    load_in_8bit: bool = False
    # optimisation
    learning_rate: float = 2e-4
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_steps: int = 30  # > 0 overrides num_train_epochs
    num_train_epochs: float = 1.0
    warmup_ratio: float = 0.1
    lr_scheduler_type: str = "cosine"
    weight_decay: float = 0.0
    precision: str = "auto"  # auto | bf16 | fp16 | fp32
    gradient_checkpointing: bool = False
    batching: str = "padding_free"  # padding_free | padded (length-grouped)
    seed: int = 42
    # bookkeeping
    logging_steps: int = 1
    save_steps: int = 10
    save_total_limit: int = 2
    max_new_tokens: int = 48
    run_name: str = "demo"
    overwrite: bool = False
    report_to: str = "tensorboard"  # tensorboard | wandb | swanlab | none
    backend: str = "auto"  # auto | hf | unsloth


def setup_run(p: Params):
    # Under DDP the main rank creates (or overwrites) the folder before the others look at it,
    # so every rank sees the same checkpoints when it decides whether to resume.
    with main_process_first():
        run = run_dir(EXPERIMENT, p.run_name, overwrite=p.overwrite and is_main_process())
        if is_main_process():
            save_params(p, run / "params.json")
    return run


def load_model(p: Params):
    backend = get_backend(None if p.backend == "auto" else p.backend)
    model, tokenizer = load_lora_model(p, backend)
    print(f"[lab] {p.model}: {trainable_parameters(model)}")
    return model, tokenizer, backend


def build_dataset(p: Params, tokenizer):
    """(train tokens, held-out conversations, skip report)."""
    dataset, report = load_chat_file(p.data_file, system_prompt=p.system_prompt or None, limit=p.max_rows or None)
    split = dataset.train_test_split(test_size=p.heldout_rows, seed=p.seed)
    train_tokens = tokenize_dataset(split["train"], tokenizer, p.max_seq_length, report)
    print(f"[lab] {p.data_file}: {report.summary()}; {len(train_tokens)} train, {len(split['test'])} held out")
    return train_tokens, split["test"], report


def answer_heldout(p: Params, model, tokenizer, heldout) -> list[str]:
    return generate(model, tokenizer, heldout["messages"], max_new_tokens=p.max_new_tokens)


def training_arguments(p: Params, run, backend):
    import os

    from transformers import TrainingArguments

    # transformers 5 reads the TensorBoard folder from the environment only
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run / "tensorboard")
    dtype = "fp32" if p.precision == "auto" and backend.device == "cpu" else p.precision
    return TrainingArguments(
        output_dir=str(run / "checkpoints"),
        per_device_train_batch_size=p.batch_size, per_device_eval_batch_size=p.batch_size,
        gradient_accumulation_steps=p.gradient_accumulation_steps, learning_rate=p.learning_rate,
        max_steps=p.max_steps if p.max_steps > 0 else -1, num_train_epochs=p.num_train_epochs,
        warmup_steps=p.warmup_ratio, lr_scheduler_type=p.lr_scheduler_type, weight_decay=p.weight_decay,
        bf16=dtype == "bf16" or (dtype == "auto" and backend.device == "cuda"), fp16=dtype == "fp16",
        logging_steps=p.logging_steps, save_steps=p.save_steps, save_total_limit=p.save_total_limit,
        report_to=[] if p.report_to == "none" else [p.report_to], seed=p.seed, data_seed=p.seed,
        train_sampling_strategy="group_by_length" if p.batching == "padded" else "random", remove_unused_columns=False,
        dataloader_num_workers=0, use_cpu=backend.device == "cpu", disable_tqdm=True,
        include_num_input_tokens_seen="non_padding", prediction_loss_only=True,
    )


def make_trainer(p: Params, model, tokenizer, train_tokens, eval_tokens, run, backend):
    from transformers import Trainer

    padding_free = p.batching == "padding_free" and not backend.is_unsloth
    optimizers = (None, None)
    if p.loraplus_lr_ratio > 0:
        import torch
        from peft.optimizers import create_loraplus_optimizer

        optimizers = (create_loraplus_optimizer(model, torch.optim.AdamW, lr=p.learning_rate,
                                                loraplus_lr_ratio=p.loraplus_lr_ratio, weight_decay=p.weight_decay), None)
    trainer_cls = Trainer if backend.is_unsloth else LabTrainer  # unsloth brings its own fused loss
    history = LossHistory()
    trainer = trainer_cls(
        model=model, args=training_arguments(p, run, backend), train_dataset=train_tokens, eval_dataset=eval_tokens,
        data_collator=ChatCollator(tokenizer.pad_token_id, padding_free=padding_free), callbacks=[history],
        optimizers=optimizers, processing_class=tokenizer,
    )
    return trainer, history


def train(p: Params, model, tokenizer, train_tokens, heldout, run, backend) -> dict:
    eval_tokens = tokenize_dataset(heldout, tokenizer, p.max_seq_length)
    trainer, history = make_trainer(p, model, tokenizer, train_tokens, eval_tokens, run, backend)
    eval_before = evaluate_before_training(trainer)
    resume = last_checkpoint(run / "checkpoints")
    if resume:
        print(f"[lab] resuming from {resume}")
    started = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.time() - started
    eval_after = trainer.evaluate()["eval_loss"]
    return {
        "train_loss": result.training_loss, "eval_loss_before": eval_before, "eval_loss_after": eval_after,
        "global_step": trainer.state.global_step, "resumed_from": resume, "train_seconds": round(seconds, 2),
        "train_tokens_per_second": result.metrics.get("train_tokens_per_second"),
        "tokens_seen": trainer.state.num_input_tokens_seen, "history": history.records,
    }


def save_artifacts(p: Params, run, model, tokenizer, outcome: dict, table: pd.DataFrame, report, backend) -> dict:
    scalars = {k: v for k, v in outcome.items() if k != "history"}
    metrics = {**scalars, "backend": backend.name, "device": backend.device, "rows_kept": report.kept,
               "rows_skipped": len(report.skipped), **{f"trainable_{k}": v for k, v in trainable_parameters(model).items()}}
    if not is_main_process():
        return metrics  # every rank holds the same weights after DDP; one writes them
    model.save_pretrained(run / "adapter")
    tokenizer.save_pretrained(run / "adapter")
    report.write_csv(run / "skipped_rows.csv")
    write_table(table, run, "generations")
    write_json(outcome["history"], run / "history.json")
    plots.plot_training(outcome["history"], run / "training.png", title=f"{p.model} LoRA r={p.lora_r}")
    write_json(metrics, run / "metrics.json")
    mark_complete(run, {"experiment": EXPERIMENT, "train_loss": metrics["train_loss"]})
    return metrics


def run(p: Params) -> dict:
    run_path = setup_run(p)
    model, tokenizer, backend = load_model(p)
    train_tokens, heldout, report = build_dataset(p, tokenizer)
    before = answer_heldout(p, model, tokenizer, heldout)
    outcome = train(p, model, tokenizer, train_tokens, heldout, run_path, backend)
    after = answer_heldout(p, model, tokenizer, heldout)
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
    result = run(parse_args(Params, argv, description=__doc__))
    print(result["generations"].head(3).to_string(index=False))


if __name__ == "__main__":
    main()
