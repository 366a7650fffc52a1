"""Multi-process runs (`torchrun`, `accelerate launch`, several nodes): who writes files, who waits, what can shard.

A training script runs unchanged under DDP, DeepSpeed or FSDP: the transformers
Trainer reads the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK and, with
`accelerate launch`, its ACCELERATE_* settings) and shards the batches itself.
What it cannot know is which of *our* side effects must happen once: creating
(or overwriting) the run folder, writing artifacts, the completion marker. Those
go through `is_main_process()` (global rank 0: with two nodes of one process each,
both have LOCAL_RANK 0, only one has RANK 0); `main_process_first()` makes the
other ranks wait until the main one has set the folder up, so every rank sees the
same checkpoints when it decides whether to resume.

In a single plain process every function here is a no-op that says "main".
"""

import os
from contextlib import contextmanager

from lab_utils.core.errors import MachineError


def launched_distributed() -> bool:
    """True under torchrun / accelerate launch with more than one process (on any number of nodes)."""
    return world_size() > 1


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def global_rank() -> int:
    """This process's rank among all processes of all nodes (0 when not launched distributed)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's GPU index on its node (0 when not launched distributed)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def model_device_map(device: str):
    """Where this rank loads its model. Under DDP a whole copy on this node's GPU LOCAL_RANK; under FSDP /
    ZeRO-3 the weights stay in CPU RAM until the engine shards them onto the GPUs (a whole copy per GPU is
    what they exist to avoid); on CPU, nowhere special."""
    if device != "cuda" or launch_engine() in ("fsdp", "zero3"):
        return None
    return {"": local_rank()}


def is_main_process() -> bool:
    """Global rank 0: the one process of the whole job that writes the run folder.

    Read from the launcher's RANK, not from accelerate's PartialState: before the Trainer exists,
    PartialState() on CPU ranks (no cuda, cpu=False) says "not distributed" and calls every rank main.
    """
    return global_rank() == 0


def _join_process_group():
    """The launcher's process group, joined as the Trainer will join it (gloo on CPU ranks, nccl on GPUs)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


@contextmanager
def main_process_first():
    """The main process runs the block first; the others run it after the main one is done."""
    if not launched_distributed():
        yield
        return
    with _join_process_group().main_process_first():
        yield


# ---- which engine the launcher asked for, and what cannot be sharded --------------------------------------

def launch_engine() -> str:
    """single | ddp | fsdp | zero2 | zero3, from what `accelerate launch` / `torchrun` put in the environment."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return "zero3" if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3" else "zero2"
    return "ddp" if launched_distributed() else "single"


def accelerate_cpu_single_process() -> bool:
    """`accelerate launch --cpu --num_processes N`: accelerate 1.15 starts ONE plain process for it (its simple
    launcher, without mpirun) and drops the FSDP/DeepSpeed settings, so nothing would be sharded or parallel."""
    return (os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in os.environ
            and "WORLD_SIZE" not in os.environ and "PMI_SIZE" not in os.environ)


# Experiments whose FSDP2 run fails (measured on 2 CPU ranks, accelerate 1.15, TRL 1.14), and what to use instead.
FSDP_UNSUPPORTED = {
    "grpo_gsm8k": ("GRPO under FSDP fails here: its SFT warm-up's trainer shards the model and the GRPO trainer then "
                   "meets DTensor weights; launch it with configs/accelerate/ddp.yaml (a LoRA adapter needs no "
                   "sharding of its optimizer state) or 4-bit QLoRA on one GPU"),
}


def scale_out_refusal(engine: str, backend: str, load_in_4bit: bool = False, load_in_8bit: bool = False,
                      experiment: str = "") -> str | None:
    """Why this launch cannot work, in one line (None when it can). Checked before the run folder exists."""
    if engine == "fsdp" and experiment in FSDP_UNSUPPORTED:
        return FSDP_UNSUPPORTED[experiment]
    if engine in ("fsdp", "zero3") and backend == "unsloth":
        return (f"Unsloth cannot be sharded by {'FSDP' if engine == 'fsdp' else 'DeepSpeed ZeRO-3'} (it patches the "
                "model for one GPU): set LAB_BACKEND=hf to shard transformers + peft, or launch Unsloth with "
                "configs/accelerate/ddp.yaml")
    if engine in ("fsdp", "zero3") and (load_in_4bit or load_in_8bit):
        return (f"{'4' if load_in_4bit else '8'}-bit QLoRA cannot be sharded by "
                f"{'FSDP' if engine == 'fsdp' else 'DeepSpeed ZeRO-3'} here (bitsandbytes stores the frozen weights "
                "as uint8, which sharding cannot split): set load_in_4bit/load_in_8bit false (16-bit LoRA shards), "
                "or keep QLoRA and launch with configs/accelerate/ddp.yaml")
    return None


def check_launch(backend: str, load_in_4bit: bool = False, load_in_8bit: bool = False, experiment: str = "") -> str:
    """The engine this process was launched with; raises one line for a launch that cannot work."""
    if accelerate_cpu_single_process():
        raise MachineError("accelerate launch --cpu starts ONE process and ignores the config's FSDP/DeepSpeed "
                           "settings: drop --cpu (on a machine without CUDA the ranks run on CPU anyway)")
    engine = launch_engine()
    refusal = scale_out_refusal(engine, backend, load_in_4bit, load_in_8bit, experiment)
    if refusal:
        raise MachineError(refusal)
    if engine == "fsdp":
        shard_on_cpu_ranks()
    return engine


def shard_on_cpu_ranks():
    """Let accelerate's FSDP path run on CPU ranks (gloo) as it runs on GPUs.

    accelerate 1.15 turns the FSDP plugin on only for accelerator devices: on CPU ranks its state is
    MULTI_CPU and the plugin is dropped, so `fsdp.yaml` quietly trains plain DDP. This keeps the
    plugin: the same fully_shard calls, DTensor shards and sharded checkpoints as on a GPU box
    (torch's FSDP2 runs on gloo). A no-op where CUDA is visible, and done once per process.
    """
    import torch
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    if torch.cuda.is_available() or getattr(AcceleratorState, "_lab_fsdp_on_cpu", False):
        return
    original_init = AcceleratorState.__init__

    def init_keeping_fsdp(self, *args, fsdp_plugin=None, **kwargs):
        original_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            if self._mixed_precision != "no":
                fsdp_plugin.set_mixed_precision(self._mixed_precision)
            self.distributed_type, self.fsdp_plugin = DistributedType.FSDP, fsdp_plugin

    AcceleratorState.__init__ = init_keeping_fsdp
    AcceleratorState._lab_fsdp_on_cpu = True
