"""The shared Params groups every training experiment's knobs come from.
"""

from dataclasses import dataclass


# Every training experiment's Params is composed of these groups (plus its own data and
# method fields), so a knob has one name, one default and one meaning everywhere: configs,
# notebooks and the batch runner speak one vocabulary. Defaults are the CPU demo's; an
# experiment overrides a default by redeclaring the field in its own Params.
# A knob's help is the comment on its line (lab_utils.core.config.field_help reads it for --help,
# --print_config and the notebooks); `knob_section` (a class attribute, not a field) is the heading
# a group's knobs are shown under.
@dataclass(kw_only=True)
class RunParams:
    """Which model, which backend, where the run goes and what it logs."""

    knob_section = "run"

    model: str = "smollm2-135m"  # registry name, local folder or hub id
    trust_remote_code: bool = False  # run Python code the model's repository ships (README): trusted repos only
    backend: str = "auto"  # auto | hf | unsloth (LAB_BACKEND forces one too)
    seed: int = 42  # random seed for LoRA init, data order and sampling
    run_name: str = "demo"  # the run folder: $LAB_OUTPUT_DIR/<experiment>/<run_name>/
    overwrite: bool = False  # true: start this run again from scratch (else: finished refused, unfinished resumed)
    report_to: str = "tensorboard"  # tensorboard | wandb | swanlab | none
    logging_steps: int = 1  # log the loss every N steps
    save_steps: int = 10  # checkpoint every N steps: an interrupted run resumes from the last one
    save_total_limit: int = 2  # checkpoints kept on disk (older ones are deleted)


@dataclass(kw_only=True)
class LoraParams:
    """The LoRA adapter and how the frozen base is stored."""

    knob_section = "LoRA"

    lora_r: int = 16  # LoRA rank: size of the low-rank update (more = more capacity, more memory)
    lora_alpha: int = 32  # LoRA scale: the update is multiplied by alpha / r
    lora_dropout: float = 0.0  # dropout on the LoRA input (0 = none)
    use_rslora: bool = False  # scale by alpha/sqrt(r): stabler at large r
    use_dora: bool = False  # weight-decomposed LoRA (slower, sometimes better)
    loraplus_lr_ratio: float = 0.0  # > 0: LoRA+ (B learns this many times faster than A)
    lora_mlp: bool = True  # also adapt gate/up/down projections (Unsloth's vision switch finetune_mlp_modules)
    load_in_4bit: bool = False  # QLoRA (GPU only)
    load_in_8bit: bool = False  # 8-bit base weights (GPU only, bitsandbytes)


@dataclass(kw_only=True)
class OptimParams:
    """The optimiser, the schedule, what one step holds and the numeric precision."""

    knob_section = "optimisation"

    learning_rate: float = 2e-4  # peak learning rate
    batch_size: int = 8  # rows per step on each device (each GPU under DDP)
    max_seq_length: int = 256  # tokens per row (prompt + answer): with batch_size, what one step holds in memory
    gradient_accumulation_steps: int = 1  # batches summed per optimizer step: batch_size x this = effective batch
    max_steps: int = 30  # optimizer steps to train; > 0 overrides num_train_epochs
    num_train_epochs: float = 1.0  # passes over the training rows (used when max_steps <= 0)
    warmup_ratio: float = 0.1  # share of the steps spent ramping the learning rate up, in [0, 1)
    lr_scheduler_type: str = "cosine"  # learning-rate schedule after warm-up: cosine | linear | constant | ...
    weight_decay: float = 0.0  # AdamW weight decay
    max_grad_norm: float = 1.0  # clip the gradient norm to this (0 = no clipping)
    optim: str = "adamw_torch"  # adamw_8bit on a GPU saves optimizer memory (bitsandbytes)
    precision: str = "auto"  # auto (bf16 where native, CPU included) | bf16 | fp16 | fp32
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, slower steps


@dataclass(kw_only=True)
class AnswerParams:
    """The greedy answers to held-out rows before and after training (every training experiment)."""

    knob_section = "evaluation"

    max_new_tokens: int = 48  # length of the generated answers shown before/after (and during) training


@dataclass(kw_only=True)
class EvalParams(AnswerParams):
    """Held-out evaluation during training (the experiments that have an eval loss)."""

    knob_section = "evaluation"

    eval_steps: int = 0  # > 0: eval loss (+ sample answers) every N steps; 0: before and after training only
    load_best: bool = False  # end with the checkpoint of lowest eval loss (needs eval_steps > 0)
    eval_loss_rows: int = 64  # held-out rows the eval loss is computed on (0 = all): each is a forward pass


@dataclass(kw_only=True)
class LoraSFTParams(RunParams, LoraParams, OptimParams, EvalParams):
    """Every text SFT experiment's knobs: the shared groups plus batching."""

    enable_thinking: bool | None = None  # Qwen3's thinking switch in rows and answers (null: template default)
    batching: str = "padding_free"  # padding_free | padded (length-grouped)
