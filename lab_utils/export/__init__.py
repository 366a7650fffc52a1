"""Export and serving: adapters, merging, GGUF + Ollama Modelfile, chat templates, hub upload."""
