"""Vision-language: the processor, the tiny CPU Qwen2.5-VL, the collator, vision LoRA, answers."""
