"""Training: shared Params groups, LoRA models, batching, the loss, the trainer, runs, preference, rollouts."""
