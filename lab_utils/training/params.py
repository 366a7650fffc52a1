"""The shared Params groups every training experiment's knobs come from.
"""

from dataclasses import dataclass


# Every training experiment's Params is composed of these groups (plus its own data and
# method fields), so a knob has one name, one default and one meaning everywhere: configs,
# notebooks and the batch runner speak one vocabulary. Defaults are the CPU demo's; an
# experiment overrides a default by redeclaring the field in its own Params.
@dataclass(kw_only=True)
class RunParams:
    """Which model, which backend, where the run goes and what it logs."""

    model: str = "smollm2-135m"  # registry name, local folder or hub id
    backend: str = "auto"  # auto | hf | unsloth (LAB_BACKEND forces one too)
    seed: int = 42
    run_name: str = "demo"  # the run folder: $LAB_OUTPUT_DIR/<experiment>/<run_name>/
    overwrite: bool = False  # a finished run with this name is refused unless true
    report_to: str = "tensorboard"  # tensorboard | wandb | swanlab | none
    logging_steps: int = 1
    save_steps: int = 10  # checkpoint every N steps: an interrupted run resumes from the last one
    save_total_limit: int = 2


@dataclass(kw_only=True)
class LoraParams:
    """The LoRA adapter and how the frozen base is stored."""

    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    use_rslora: bool = False  # scale by alpha/sqrt(r): stabler at large r
    use_dora: bool = False  # weight-decomposed LoRA (slower, sometimes better)
    loraplus_lr_ratio: float = 0.0  # > 0: LoRA+ (B learns this many times faster than A)
    lora_mlp: bool = True  # also adapt gate/up/down projections (Unsloth's vision switch finetune_mlp_modules)
    load_in_4bit: bool = False  # QLoRA (GPU only)
    load_in_8bit: bool = False


@dataclass(kw_only=True)
class OptimParams:
    """The optimiser, the schedule, what one step holds and the numeric precision."""

    learning_rate: float = 2e-4
    batch_size: int = 8  # per device
    max_seq_length: int = 256  # tokens per row (prompt + answer): with batch_size, what one step holds in memory
    gradient_accumulation_steps: int = 1
    max_steps: int = 30  # > 0 overrides num_train_epochs
    num_train_epochs: float = 1.0
    warmup_ratio: float = 0.1  # share of the steps spent ramping the learning rate up, in [0, 1)
    lr_scheduler_type: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"  # adamw_8bit on a GPU saves optimizer memory (bitsandbytes)
    precision: str = "auto"  # auto (bf16 where native, CPU included) | bf16 | fp16 | fp32
    gradient_checkpointing: bool = False


@dataclass(kw_only=True)
class AnswerParams:
    """The greedy answers to held-out rows before and after training (every training experiment)."""

    max_new_tokens: int = 48  # length of the generated answers shown before/after (and during) training


@dataclass(kw_only=True)
class EvalParams(AnswerParams):
    """Held-out evaluation during training (the experiments that have an eval loss)."""

    eval_steps: int = 0  # > 0: eval loss (+ sample answers) every N steps; 0: before and after training only
    load_best: bool = False  # end with the checkpoint of lowest eval loss (needs eval_steps > 0)
    eval_loss_rows: int = 64  # held-out rows the eval loss is computed on (0 = all): each is a forward pass


@dataclass(kw_only=True)
class LoraSFTParams(RunParams, LoraParams, OptimParams, EvalParams):
    """Every text SFT experiment's knobs: the shared groups plus batching."""

    enable_thinking: bool | None = None  # Qwen3's thinking switch in rows and answers (null: template default)
    batching: str = "padding_free"  # padding_free | padded (length-grouped)
