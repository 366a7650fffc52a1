"""Vision SFT with LoRA: teach a Qwen2.5-VL or Qwen3-VL model to read images from an Excel sheet (image -> answer).

    python -m scripts.sft_vision --config configs/sft_vision.yaml
    python -m scripts.sft_vision --config configs/sft_vision.yaml --max_steps 5 --lora_r 8
    papermill notebooks/sft_vision.ipynb out.ipynb -f configs/sft_vision.yaml

Defaults are the CPU demo: the tiny random Qwen2.5-VL (`tiny-qwen2.5-vl`, built in code, no
download) trains from scratch on the bundled sheet of one large digit per picture: in 150
steps (~3 min on 2 CPU cores) held-out accuracy goes from 0.00 to 0.70 (see the notebook). The
same Params on configs/sft_vision_gpu.yaml train unsloth/Qwen2.5-VL-3B-Instruct in 4 bit with
Unsloth. Each run writes to $LAB_OUTPUT_DIR/sft_vision/<run_name>/:
adapter/ (LoRA + processor), checkpoints/, tensorboard/, params.json, metrics.json,
history.json, training.png, samples.png, answers.md/.csv, skipped_rows.csv, run_complete.json.

The sheet is read by data_loaders.excel_vision (file-name column or pictures pasted into
the cells); the loss counts only the answer tokens (lab_utils.vision.collator masks the
system/user turns and every image token).
"""

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from data_loaders.common import split_heldout
from data_loaders.excel_vision import DEFAULT_MAX_IMAGE_SIDE, DEFAULT_PROMPT, load_excel_vision
from lab_utils.core import plots
from lab_utils.core.artifacts import setup_logging, write_table
from lab_utils.core.backend import get_backend
from lab_utils.core.config import run_cli
from lab_utils.core.distributed import is_main_process
from lab_utils.core.paths import find_data_file
from lab_utils.training.params import EvalParams, LoraParams, OptimParams, RunParams
from lab_utils.training.steps import Data, LoadedModel
from lab_utils.training.trainer import build_trainer, run_trainer, training_arguments
from lab_utils.training.runs import finish_run, open_run, save_training_artifacts
from lab_utils.training.lora import trainable_parameters
from lab_utils.vision.answers import char_accuracy, generate_answers, score_answers
from lab_utils.vision.collator import make_vision_collator, vision_sft_config
from lab_utils.vision.lora import add_vision_lora
from lab_utils.vision.model import load_vision_model
from lab_utils.vision.processor import check_pixel_bounds, set_image_pixels
from lab_utils.core.errors import ParamError

EXPERIMENT = "sft_vision"


@dataclass(kw_only=True)
class Params(RunParams, LoraParams, OptimParams, EvalParams):
    # data (the model, LoRA, optimisation, evaluation and run knobs: lab_utils.training.params's shared groups)
    sheet: str = "vision/digits.xlsx"  # .xlsx under LAB_DATA_DIR or data/samples/
    worksheet: str = ""  # sheet name inside the workbook ("" = the first one)
    image_column: str = ""  # header text or column letter ("" = detect image/file/图片...)
    question_column: str = ""  # "" = detect question/prompt/问题...; rows without one get default_question
    answer_column: str = ""  # "" = detect answer/label/reading/答案/读数...
    default_question: str = DEFAULT_PROMPT  # the question asked of rows that have none
    system_prompt: str = ""  # "" = the chat template's default system turn
    max_image_side: int = DEFAULT_MAX_IMAGE_SIDE  # longer side in pixels: fewer pixels, fewer vision tokens
    # Image size bounds: 768*768 is LLaMA-Factory's image_max_pixels (fits a 24 GB card); 56*56 Qwen2-VL's default.
    # One vision token per 28x28 px (32x32 on Qwen3-VL): 589824 px is at most 752 (576) tokens per image.
    max_pixels: int = 589824  # most pixels per image (768*768): a bigger one is shrunk, bounding its vision tokens
    min_pixels: int = 3136  # fewest pixels per image (56*56): a smaller one is enlarged
    max_rows: int = 0  # 0 = every row
    heldout_rows: int = 40  # kept out of training: eval loss and before/after answers
    max_seq_length: int = 2048  # a longer row (a huge image) is an error, never silently truncated
    # which layers get LoRA (the switches mean what they mean in Unsloth's FastVisionModel.get_peft_model)
    finetune_vision_layers: bool = True  # adapt the vision tower too: new kinds of images
    finetune_language_layers: bool = True  # adapt the language model: new kinds of answers
    finetune_attention_modules: bool = True  # LoRA on the attention projections (the MLP switch is the shared lora_mlp)
    # Trained fully next to LoRA and saved with it (peft modules_to_save). The tiny random model's
    # output layer has never learnt which of its 49k tokens are digits, and LoRA on the layers
    # cannot teach it; a pretrained model knows its vocabulary already: [] on GPU.
    modules_to_save: list[str] = field(default_factory=lambda: ["lm_head"])  # trained fully beside LoRA; [] on GPU
    cpu_threads: int = 1  # torch threads on CPU (0 = torch's default); see load_model
    grid_images: int = 12  # held-out images drawn in samples.png
    # the CPU demo's model is tiny and random: it needs a high learning rate (see the notebook)

    # registry name (tiny-qwen3-vl on CPU; qwen2.5-vl-3b, qwen3-vl-2b/4b/8b on GPU), local folder or hub id
    model: str = "tiny-qwen2.5-vl"
    lora_alpha: int = 16
    learning_rate: float = 1e-2
    batch_size: int = 8
    max_steps: int = 150
    warmup_ratio: float = 0.05
    save_steps: int = 50
    max_new_tokens: int = 4


# Every experiment has the same steps, in this order (tests/test_experiment_steps.py checks it):
# load_data, build_dataset, setup_run, load_model, evaluate, train, save_artifacts, run, main.

def load_data(p: Params) -> Data:
    """Train rows, held-out rows and the skip report from the sheet; fails before any model or run folder."""
    if p.load_in_8bit:
        raise ParamError("load_in_8bit is not supported for vision models; use load_in_4bit (QLoRA) on a GPU")
    check_pixel_bounds(p.model, p.min_pixels, p.max_pixels)
    rows, report = load_excel_vision(
        p.sheet, sheet=p.worksheet or None, image_column=p.image_column or None,
        question_column=p.question_column or None, answer_column=p.answer_column or None,
        default_prompt=p.default_question, system=p.system_prompt or None, max_image_side=p.max_image_side,
        max_pixels=p.max_pixels, limit=p.max_rows or None,
    )
    train_rows, heldout = split_heldout(rows, p.heldout_rows, p.seed, find_data_file(p.sheet))
    print(f"[lab] {p.sheet}: {report.summary()}; {len(train_rows)} train, {len(heldout)} held out")
    return Data(train=train_rows, heldout=heldout, report=report)


def build_dataset(p: Params, data: Data) -> Data:
    """Image rows stay rows: the collator (lab_utils.vision.collator) turns each batch into tensors with the
    processor, answer tokens labelled. The held-out rows are the eval loss's rows too."""
    return replace(data, eval_set=data.heldout if len(data.heldout) else None)


def setup_run(p: Params) -> Path:
    return open_run(EXPERIMENT, p)


def load_model(p: Params) -> LoadedModel:
    """Model with LoRA, processor, backend: Unsloth FastVisionModel on a CUDA box that has it, else peft."""
    backend = get_backend(p.backend)
    if backend.device == "cpu" and p.cpu_threads > 0:
        import torch

        # The toy model's matrices are too small for threads to pay off, and on a busy machine the
        # threads wait on each other: the 30-step demo trained in 11 s with 1 thread vs 55 s with 2 (2 shared cores).
        torch.set_num_threads(p.cpu_threads)
    model, processor = load_vision_model(p.model, backend=backend, load_in_4bit=p.load_in_4bit,
                                         max_seq_length=p.max_seq_length, trust_remote_code=p.trust_remote_code,
                                         gradient_checkpointing=p.gradient_checkpointing)
    set_image_pixels(processor, p.min_pixels, p.max_pixels)  # the model-side bound, whatever the loader did
    model = add_vision_lora(model, backend=backend, r=p.lora_r, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout,
                            use_rslora=p.use_rslora, use_dora=p.use_dora,
                            finetune_vision_layers=p.finetune_vision_layers,
                            finetune_language_layers=p.finetune_language_layers,
                            finetune_attention_modules=p.finetune_attention_modules,
                            finetune_mlp_modules=p.lora_mlp, seed=p.seed,
                            modules_to_save=p.modules_to_save)
    print(f"[lab] {p.model}: {trainable_parameters(model)}")
    return LoadedModel(model, processor, backend)


def evaluate(p: Params, lm: LoadedModel, data: Data) -> list[str]:
    """Greedy answers to the held-out images (fixed decoding: before and after are comparable)."""
    return answer_images(p, lm, data.heldout)


def answer_images(p: Params, lm: LoadedModel, rows) -> list[str]:
    if len(rows) == 0:
        return []
    set_mode(lm.model, lm.backend, training=False)
    questions = [m[-2]["content"][-1]["text"] for m in rows["messages"]]
    return generate_answers(lm.model, lm.tokenizer, rows["images"], questions, max_new_tokens=p.max_new_tokens,
                            system=p.system_prompt or None)


def train(p: Params, lm: LoadedModel, data: Data, run_dir: Path) -> dict:
    from trl import SFTConfig, SFTTrainer  # after load_model: unsloth must patch trl before it is imported

    set_mode(lm.model, lm.backend, training=True)
    args = training_arguments(p, run_dir, lm.backend, SFTConfig, **vision_sft_config())
    collator = make_vision_collator(lm.model, lm.tokenizer, lm.backend, max_length=p.max_seq_length)
    trainer, history = build_trainer(p, SFTTrainer, lm.model, args, data.train, data.eval_set,
                                     processing_class=lm.tokenizer, data_collator=collator)
    return run_trainer(p, trainer, history, run_dir, answer=lambda: answer_between_steps(p, lm, data.heldout))


def answer_between_steps(p: Params, lm: LoadedModel, heldout) -> list[str]:
    """The first two held-out images answered mid-training; the model goes back to training mode after."""
    answers = answer_images(p, lm, heldout.select(range(min(2, len(heldout)))))
    set_mode(lm.model, lm.backend, training=True)
    return answers


def set_mode(model, backend, training: bool):
    """Unsloth switches its kernels between training and generation; peft models need nothing."""
    if backend.is_unsloth:
        from unsloth import FastVisionModel

        (FastVisionModel.for_training if training else FastVisionModel.for_inference)(model)


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


def save_artifacts(p: Params, run_dir: Path, lm: LoadedModel, data: Data, outcome: dict, table: pd.DataFrame) -> dict:
    metrics = save_training_artifacts(p, run_dir, lm.model, lm.tokenizer, outcome, data.report, lm.backend)
    metrics.update(score_table(table))
    if is_main_process():  # one rank writes (DDP)
        write_table(table, run_dir, "answers")
        plt.close(sample_grid(p, data.heldout, table, run_dir / "samples.png"))  # on disk; a notebook drew its own
    finish_run(run_dir, EXPERIMENT, metrics, headline=("train_loss", "char_accuracy_after"))
    return metrics


def run(p: Params) -> dict:
    started = time.time()
    data = build_dataset(p, load_data(p))
    run_dir = setup_run(p)
    lm = load_model(p)
    before = evaluate(p, lm, data)
    outcome = train(p, lm, data, run_dir)
    after = evaluate(p, lm, data)
    table = answers_table(data.heldout, before, after)
    outcome["run_seconds"] = round(time.time() - started, 2)
    metrics = save_artifacts(p, run_dir, lm, data, outcome, table)
    print(f"[lab] done: {run_dir}")
    return {"run_dir": str(run_dir), "metrics": metrics, "answers": table}


def main(argv=None):
    setup_logging()
    result = run_cli(run, Params, argv, description=__doc__)
    metrics = result["metrics"]
    print(result["answers"][["reference", "before", "after"]].to_string(index=False))
    print(f"[lab] exact match {metrics['exact_match_before']:.2f} -> {metrics['exact_match_after']:.2f}, "
          f"character accuracy {metrics['char_accuracy_before']:.2f} -> {metrics['char_accuracy_after']:.2f}")


if __name__ == "__main__":
    main()
