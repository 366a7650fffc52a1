"""What an experiment's steps hand each other: its data (Data) and its loaded model (LoadedModel).

Every training experiment runs the same steps in the same order (tests/test_experiment_steps.py):
load_data(p) -> Data, build_dataset(p, data) -> Data (both before the run folder exists, so data the
lab cannot use stops before anything is written), setup_run(p) -> run_dir, load_model(p) ->
LoadedModel, evaluate(p, lm, data), train(p, lm, data, run_dir) -> outcome, save_artifacts(p, run_dir, lm,
data, outcome, ...). An experiment that carries more (GRPO's warm-up rows, the medical CSV's encoding
report, the rollout engine) subclasses these with its own fields.
"""

from dataclasses import dataclass
from typing import Any

from lab_utils.core.backend import Backend


@dataclass
class Data:
    """The rows of a run, split and checked; build_dataset replaces `train` (and `eval_set`) with tokens."""

    train: Any  # rows to train on: conversations or their tokens, prompts, pairs, image rows
    heldout: Any  # rows kept out of training: answered (and scored) before and after training
    report: Any  # data_loaders.common.SkipReport: every row dropped, and why
    eval_set: Any = None  # what the trainer's eval loss is computed on (None: no eval loss)


@dataclass
class LoadedModel:
    """The model with its LoRA adapter, what encodes its inputs, and the backend that loaded it."""

    model: Any
    tokenizer: Any  # the processor, for a vision model
    backend: Backend
