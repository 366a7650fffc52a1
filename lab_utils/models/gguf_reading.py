"""GGUF files read through transformers (the embedded model's conversion, a GGUF export loaded back).

transformers dequantises a GGUF into a normal model, but rereads the file's metadata and rebuilds
llama.cpp's tensor-name table many times per load; gguf_parsed_once does each once.
"""

from contextlib import contextmanager
from pathlib import Path


@contextmanager
def gguf_parsed_once():
    """Within this block, transformers parses each GGUF file once.

    Loading a GGUF through transformers reads the whole file's metadata again for the config, the
    tokenizer and the weights (gguf.GGUFReader, ~3 s each for SmolLM2's 49k-token vocabulary on a
    CPU), and builds llama.cpp's tensor-name table again for every module of the model (~4 s for
    the 135M model's 400 modules). Both are read-only (a memory map, a lookup table): one of each serves
    every call.
    """
    import functools

    import gguf

    original_reader, original_name_map, readers = gguf.GGUFReader, gguf.get_tensor_name_map, {}

    def reader(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original_reader(path, mode)
        return readers[key]

    # transformers imports both from the gguf module at each call
    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.cache(original_name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = original_reader, original_name_map


def load_gguf_model(gguf_file, **kwargs):
    """A transformers causal LM from one GGUF file (dequantised), its metadata parsed once."""
    from transformers import AutoModelForCausalLM

    gguf_file = Path(gguf_file)
    with gguf_parsed_once():
        return AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, **kwargs)
