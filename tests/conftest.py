"""Shared test setup: offline, hermetic output folders, one converted copy of the embedded model.

LAB_MODELS_DIR is left as the user/CI set it (default: <repo>/models), so the
embedded SmolLM2 is converted from its GGUF once and reused by every test.
Each test gets its own LAB_OUTPUT_DIR and LAB_DATA_DIR under tmp_path unless it
points them elsewhere itself.
"""

import os
from pathlib import Path

import pytest

from tests.helpers import shared_data_dir
from tests.gpu_isolation import pytest_runtest_protocol  # noqa: F401  (each GPU test in its own process)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the test suite may reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# vLLM's own logging handler is bound to sys.stdout when vllm is first imported: inside a test that is
# pytest's capture stream, closed when the test ends, and every later vLLM log line then fails on a closed
# file (its error report on a closed stderr can take the whole session down). Through the root logger
# instead, pytest's logging capture handles its lines like any other library's.
os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def hermetic_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.delenv("LAB_DATA_DIR", raising=False)
    monkeypatch.delenv("LAB_BACKEND", raising=False)
    yield


@pytest.fixture(scope="session")
def embedded_model_dir():
    from lab_utils.models.registry import resolve_model

    return resolve_model("smollm2-135m")


@pytest.fixture(scope="session")
def tokenizer(embedded_model_dir):
    from lab_utils.models.registry import load_tokenizer

    return load_tokenizer(embedded_model_dir)


@pytest.fixture(scope="session")
def embedded_model(embedded_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir, attn_implementation="sdpa")
    model.config.use_cache = False
    return model.eval()


@pytest.fixture
def real_data_dir():
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared datasets not found at {path} (set LAB_SHARED_DATA)")
    return path


@pytest.fixture
def lab_server(tmp_path):
    """`make lab`'s JupyterLab started headless for one test (lab_utils.core.jupyter_lab.LabServer):
    a first-time user, runs under tmp_path/outputs, progress drawn as it would be for a person."""
    from lab_utils.core.jupyter_lab import LabServer

    env = {**os.environ, "LAB_OUTPUT_DIR": str(tmp_path / "outputs"),
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    env.pop("LAB_PROGRESS", None)  # decided by where the kernel runs, as for a user
    with LabServer(tmp_path / "lab", env) as server:
        yield server
