"""Multi-process runs (`torchrun`, `accelerate launch`): who writes files, and when ranks wait.

A training script runs unchanged under DDP, DeepSpeed or FSDP: the transformers
Trainer reads the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK and, with
`accelerate launch`, its ACCELERATE_* settings) and shards the batches itself.
What it cannot know is which of *our* side effects must happen once: creating
(or overwriting) the run folder, writing artifacts, the completion marker. Those
go through `is_main_process()`; `main_process_first()` makes the other ranks
wait until the main one has set the folder up, so every rank sees the same
checkpoints when it decides whether to resume.

In a single plain process every function here is a no-op that says "main".
`PartialState` (accelerate) joins the process group the launcher describes; the
Trainer later finds that group already initialised and reuses it.
"""

import os
from contextlib import contextmanager


def launched_distributed() -> bool:
    """True under torchrun / accelerate launch with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    """This process's GPU index on its node (0 when not launched distributed)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def _state():
    from accelerate import PartialState

    return PartialState()


def is_main_process() -> bool:
    return _state().is_main_process if launched_distributed() else True


@contextmanager
def main_process_first():
    """The main process runs the block first; the others run it after the main one is done."""
    if not launched_distributed():
        yield
        return
    with _state().main_process_first():
        yield
