"""Vision SFT with LoRA: teach a Qwen2.5-VL model to read images from an Excel sheet (image -> answer).

    python -m scripts.sft_vision --config configs/sft_vision.yaml
    python -m scripts.sft_vision --config configs/sft_vision.yaml --max_steps 5 --lora_r 8
    papermill notebooks/sft_vision.ipynb out.ipynb -f configs/sft_vision.yaml

Defaults are the CPU demo: the tiny random Qwen2.5-VL (`tiny-qwen2.5-vl`, built in code, no
download) on the bundled meter-reading sheet, a few dozen steps in well under a minute. The
same Params on configs/sft_vision_gpu.yaml train unsloth/Qwen2.5-VL-3B-Instruct in 4 bit with
Unsloth. Each run writes to $LAB_OUTPUT_DIR/sft_vision/<run_name>/:
adapter/ (LoRA + processor), checkpoints/, tensorboard/, params.json, metrics.json,
history.json, training.png, samples.png, answers.md/.csv, skipped_rows.csv, run_complete.json.

The sheet is read by data_loaders.excel_vision (file-name column or pictures pasted into
the cells); the loss counts only the answer tokens (lab_utils.vision's collator masks the
system/user turns and every image token).
"""

import time
from dataclasses import dataclass

import matplotlib.pyplot as plt
import pandas as pd

from data_loaders.common import data_error
from data_loaders.excel_vision import DEFAULT_MAX_IMAGE_SIDE, DEFAULT_PROMPT, load_excel_vision
from lab_utils import plots
from lab_utils.artifacts import setup_logging, write_json, write_table
from lab_utils.backend import get_backend
from lab_utils.config import run_cli, save_params
from lab_utils.paths import find_data_file, mark_complete, run_dir
from lab_utils.progress import show_progress
from lab_utils.training import LossHistory, last_checkpoint, resolve_precision, trainable_parameters
from lab_utils.vision import (add_vision_lora, char_accuracy, generate_answers, load_vision_model,
                              make_vision_collator, score_answers, vision_sft_config)

EXPERIMENT = "sft_vision"


@dataclass(kw_only=True)
class Params:
    # model and data
    model: str = "tiny-qwen2.5-vl"  # registry name (qwen2.5-vl-3b on GPU), local folder or hub id
    sheet: str = "vision/meter_readings.xlsx"  # .xlsx under LAB_DATA_DIR or data/samples/
    worksheet: str = ""  # sheet name inside the workbook ("" = the first one)
    image_column: str = ""  # header text or column letter ("" = detect image/file/图片...)
    question_column: str = ""  # "" = detect question/prompt/问题...; rows without one get default_question
    answer_column: str = ""  # "" = detect answer/label/reading/答案/读数...
    default_question: str = DEFAULT_PROMPT
    system_prompt: str = ""  # "" = the chat template's default system turn
    max_image_side: int = DEFAULT_MAX_IMAGE_SIDE  # longer side in pixels: fewer pixels, fewer vision tokens
    max_rows: int = 0  # 0 = every row
    heldout_rows: int = 6  # kept out of training: eval loss and before/after answers
    max_seq_length: int = 2048  # a longer row (a huge image) is an error, never silently truncated
    # LoRA (the switches mean what they mean in Unsloth's FastVisionModel.get_peft_model)
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    finetune_vision_layers: bool = True  # adapt the vision tower too: new kinds of images
    finetune_language_layers: bool = True
    finetune_attention_modules: bool = True
    finetune_mlp_modules: bool = True
    load_in_4bit: bool = False  # QLoRA (GPU only)
    # optimisation
    learning_rate: float = 5e-3  # high: the CPU demo model is tiny and random (see the notebook)
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_steps: int = 30  # > 0 overrides num_train_epochs
    num_train_epochs: float = 1.0
    warmup_ratio: float = 0.1
    lr_scheduler_type: str = "cosine"
    weight_decay: float = 0.0
    optim: str = "adamw_torch"  # adamw_8bit on GPU saves optimizer memory
    precision: str = "auto"  # auto | bf16 | fp16 | fp32
    gradient_checkpointing: bool = False
    seed: int = 42
    cpu_threads: int = 1  # torch threads on CPU (0 = torch's default); see load_model
    # bookkeeping
    logging_steps: int = 1
    save_steps: int = 10
    save_total_limit: int = 2
    max_new_tokens: int = 8
    grid_images: int = 8  # held-out images drawn in samples.png
    run_name: str = "demo"
    overwrite: bool = False
    report_to: str = "tensorboard"  # tensorboard | wandb | swanlab | none
    backend: str = "auto"  # auto | hf | unsloth


def load_rows(p: Params):
    """(train rows, held-out rows, skip report) from the sheet; fails before any model or run folder."""
    rows, report = load_excel_vision(
        p.sheet, sheet=p.worksheet or None, image_column=p.image_column or None,
        question_column=p.question_column or None, answer_column=p.answer_column or None,
        default_prompt=p.default_question, system=p.system_prompt or None, max_image_side=p.max_image_side,
        limit=p.max_rows or None,
    )
    if len(rows) <= p.heldout_rows:
        raise data_error(find_data_file(p.sheet), f"{len(rows)} usable rows but heldout_rows={p.heldout_rows}; "
                         "lower heldout_rows so some rows are left to train on")
    split = rows.train_test_split(test_size=p.heldout_rows, seed=p.seed) if p.heldout_rows else None
    train_rows, heldout = (split["train"], split["test"]) if split else (rows, rows.select([]))
    print(f"[lab] {p.sheet}: {report.summary()}; {len(train_rows)} train, {len(heldout)} held out")
    return train_rows, heldout, report


def setup_run(p: Params):
    run = run_dir(EXPERIMENT, p.run_name, overwrite=p.overwrite)
    save_params(p, run / "params.json")
    return run


def load_model(p: Params):
    """(model with LoRA, processor, backend): Unsloth FastVisionModel on a CUDA box that has it, else peft."""
    backend = get_backend(None if p.backend == "auto" else p.backend)
    if backend.device == "cpu" and p.cpu_threads > 0:
        import torch

        # The toy model's matrices are too small for threads to pay off, and on a busy machine the
        # threads wait on each other: the 30-step demo trained in 11 s with 1 thread vs 55 s with 2 (2 shared cores).
        torch.set_num_threads(p.cpu_threads)
    model, processor = load_vision_model(p.model, backend=backend, load_in_4bit=p.load_in_4bit,
                                         max_seq_length=p.max_seq_length, gradient_checkpointing=p.gradient_checkpointing)
    model = add_vision_lora(model, backend=backend, r=p.lora_r, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout,
                            finetune_vision_layers=p.finetune_vision_layers,
                            finetune_language_layers=p.finetune_language_layers,
                            finetune_attention_modules=p.finetune_attention_modules,
                            finetune_mlp_modules=p.finetune_mlp_modules, seed=p.seed)
    print(f"[lab] {p.model}: {trainable_parameters(model)}")
    return model, processor, backend


def set_mode(model, backend, training: bool):
    """Unsloth switches its kernels between training and generation; peft models need nothing."""
    if backend.is_unsloth:
        from unsloth import FastVisionModel

        (FastVisionModel.for_training if training else FastVisionModel.for_inference)(model)


def answer_heldout(p: Params, model, processor, heldout, backend) -> list[str]:
    """Greedy answers to the held-out images (fixed decoding: before and after are comparable)."""
    if len(heldout) == 0:
        return []
    set_mode(model, backend, training=False)
    questions = [m[-2]["content"][-1]["text"] for m in heldout["messages"]]
    return generate_answers(model, processor, heldout["images"], questions, max_new_tokens=p.max_new_tokens,
                            system=p.system_prompt or None)


def training_arguments(p: Params, run, backend):
    import os

    # transformers 5 reads the TensorBoard folder from the environment only
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run / "tensorboard")
    precision = resolve_precision(p.precision, backend.device)
    return vision_sft_config(
        run / "checkpoints",
        per_device_train_batch_size=p.batch_size, per_device_eval_batch_size=p.batch_size,
        gradient_accumulation_steps=p.gradient_accumulation_steps, learning_rate=p.learning_rate,
        max_steps=p.max_steps if p.max_steps > 0 else -1, num_train_epochs=p.num_train_epochs,
        warmup_steps=p.warmup_ratio, lr_scheduler_type=p.lr_scheduler_type, weight_decay=p.weight_decay, optim=p.optim,
        bf16=precision == "bf16", fp16=precision == "fp16",
        # Unsloth brings its own offloaded checkpointing (set when the model was loaded)
        gradient_checkpointing=p.gradient_checkpointing and not backend.is_unsloth,
        logging_steps=p.logging_steps, save_steps=p.save_steps, save_total_limit=p.save_total_limit,
        report_to=[] if p.report_to == "none" else [p.report_to], seed=p.seed, data_seed=p.seed,
        use_cpu=backend.device == "cpu", dataloader_num_workers=0, disable_tqdm=True, prediction_loss_only=True,
    )


def train(p: Params, model, processor, train_rows, heldout, run, backend) -> dict:
    from trl import SFTTrainer  # after load_model: unsloth must patch trl before it is imported

    set_mode(model, backend, training=True)
    history = LossHistory()
    trainer = SFTTrainer(model=model, args=training_arguments(p, run, backend), train_dataset=train_rows,
                         eval_dataset=heldout if len(heldout) else None, processing_class=processor,
                         data_collator=make_vision_collator(model, processor, backend, max_length=p.max_seq_length),
                         callbacks=[history])
    show_progress(trainer)  # one bar instead of a dict of strings printed per step
    eval_before = eval_loss(trainer)
    resume = last_checkpoint(run / "checkpoints")
    if resume:
        print(f"[lab] resuming from {resume}")
    started = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.time() - started
    return {
        "train_loss": result.training_loss, "eval_loss_before": eval_before, "eval_loss_after": eval_loss(trainer),
        "global_step": trainer.state.global_step, "resumed_from": resume, "train_seconds": round(seconds, 2),
        "history": history.records,
    }


def eval_loss(trainer) -> float | None:
    return trainer.evaluate()["eval_loss"] if trainer.eval_dataset is not None else None


def answers_table(heldout, before: list[str], after: list[str]) -> pd.DataFrame:
    references = list(heldout["answer"])
    return pd.DataFrame({
        "source": heldout["source"],
        "image": heldout["image_ref"],
        "reference": references,
        "before": before,
        "after": after,
        "char_acc_before": [round(char_accuracy(a, r), 3) for a, r in zip(before, references)],
        "char_acc_after": [round(char_accuracy(a, r), 3) for a, r in zip(after, references)],
    })


def score_table(table: pd.DataFrame) -> dict:
    """Exact match and character accuracy on the held-out images, before and after training."""
    before = score_answers(list(table["before"]), list(table["reference"]))
    after = score_answers(list(table["after"]), list(table["reference"]))
    return {"exact_match_before": before["exact_match"], "char_accuracy_before": before["char_accuracy"],
            "exact_match_after": after["exact_match"], "char_accuracy_after": after["char_accuracy"],
            "heldout_scored": after["n"]}


def sample_grid(p: Params, heldout, table: pd.DataFrame, path=None):
    """The first held-out images with their reference and the answers before and after training."""
    n = min(p.grid_images, len(heldout))
    captions = [f"true {row.reference}\nbefore {row.before or '∅'}\nafter {row.after or '∅'}"
                for row in table.head(n).itertuples()]
    correct = [c == 1.0 for c in table["char_acc_after"].head(n)]
    return plots.plot_image_grid([images[0] for images in heldout["images"][:n]], captions, correct=correct, path=path,
                                 title=f"{p.model}: held-out images")


def save_artifacts(p: Params, run, model, processor, outcome: dict, table: pd.DataFrame, heldout, report, backend) -> dict:
    model.save_pretrained(run / "adapter")
    processor.save_pretrained(run / "adapter")
    report.write_csv(run / "skipped_rows.csv")
    write_table(table, run, "answers")
    write_json(outcome["history"], run / "history.json")
    title = f"{p.model} vision LoRA r={p.lora_r}"
    figures = [plots.plot_training(outcome["history"], run / "training.png", title=title),
               sample_grid(p, heldout, table, run / "samples.png")]
    for figure in figures:
        plt.close(figure)  # on disk now; a notebook has shown both already and must not show them twice
    scalars = {k: v for k, v in outcome.items() if k != "history"}
    metrics = {**scalars, **score_table(table), "backend": backend.name, "device": backend.device,
               "rows_kept": report.kept, "rows_skipped": len(report.skipped),
               **{f"trainable_{k}": v for k, v in trainable_parameters(model).items()}}
    write_json(metrics, run / "metrics.json")
    mark_complete(run, {"experiment": EXPERIMENT, "train_loss": metrics["train_loss"],
                        "char_accuracy_after": metrics["char_accuracy_after"]})
    return metrics


def run(p: Params) -> dict:
    started = time.time()
    train_rows, heldout, report = load_rows(p)
    run_path = setup_run(p)
    model, processor, backend = load_model(p)
    before = answer_heldout(p, model, processor, heldout, backend)
    outcome = train(p, model, processor, train_rows, heldout, run_path, backend)
    after = answer_heldout(p, model, processor, heldout, backend)
    table = answers_table(heldout, before, after)
    outcome["run_seconds"] = round(time.time() - started, 2)
    metrics = save_artifacts(p, run_path, model, processor, outcome, table, heldout, report, backend)
    print(f"[lab] done: {run_path}")
    return {"run_dir": str(run_path), "metrics": metrics, "answers": table}


def main(argv=None):
    setup_logging()
    result = run_cli(run, Params, argv, description=__doc__)
    metrics = result["metrics"]
    print(result["answers"][["reference", "before", "after"]].to_string(index=False))
    print(f"[lab] exact match {metrics['exact_match_before']:.2f} -> {metrics['exact_match_after']:.2f}, "
          f"character accuracy {metrics['char_accuracy_before']:.2f} -> {metrics['char_accuracy_after']:.2f}")


if __name__ == "__main__":
    main()
