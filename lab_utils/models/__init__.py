"""Models and chat: the model registry (embedded SmolLM2, hubs, tokenizers) and chat formatting."""
