"""Shared test setup: offline, hermetic output folders, one converted copy of the embedded model.

LAB_MODELS_DIR is left as the user/CI set it (default: <repo>/models), so the
embedded SmolLM2 is converted from its GGUF once and reused by every test.
Each test gets its own LAB_OUTPUT_DIR and LAB_DATA_DIR under tmp_path unless it
points them elsewhere itself.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import TUTOR_PROMPT, shared_data_dir
from tests.gpu_isolation import pytest_runtest_protocol  # noqa: F401  (each GPU test in its own process)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the test suite may reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# vLLM's own logging handler is bound to sys.stdout when vllm is first imported: inside a test that is
# pytest's capture stream, closed when the test ends, and every later vLLM log line then fails on a closed
# file (its error report on a closed stderr can take the whole session down). Through the root logger
# instead, pytest's logging capture handles its lines like any other library's.
os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")

# Under pytest-xdist (make test-fast runs two workers) each worker gets one thread: two workers on two cores
# with torch's default thread count each would fight over the same cores. Set before anything imports torch;
# subprocesses (papermill kernels, torchrun) inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

REPO = Path(__file__).resolve().parent.parent


# make test / test-fast hand out whole files (pytest-xdist's loadfile: every worker that ran a test of a file would
# otherwise build the file's module- and session-scoped fixtures again; xdist's loadgroup marks do not reach its
# scheduler under pytest 9). The files that take longest (make test's --durations) go first: a long file left for
# the end keeps one worker busy while the other idles. The other files follow in their usual order.
LONGEST_FIRST = ["test_ddp", "test_grpo", "test_preference", "test_vllm", "test_browser", "test_verify_gpu",
                 "test_sft_vision", "test_export", "test_lora_rank", "test_evaluate_export", "test_benchmarks_smoke",
                 "test_vision_model", "test_batch", "test_progress", "test_run_lock", "test_sft_alpaca", "test_secrets",
                 "test_teach_notebooks", "test_sft_medical", "test_models_backend", "test_checkpoints"]


def build_shared_models():
    from lab_utils.models.random_models import SMOKE_MODEL, model_folder

    # the embedded SmolLM2 converted from its GGUF; the tiny vision models and the tiny random Llama built
    for name in ("smollm2-135m", "tiny-qwen2.5-vl", "tiny-qwen3-vl", SMOKE_MODEL):
        model_folder(name)


def pytest_configure(config):
    """Build the model folders the tests share once, before any test (and, under pytest-xdist, before any worker
    runs one): two workers building one folder at once raced in a fresh clone (a DDP rank read a folder another
    process was still replacing). Cached under LAB_MODELS_DIR: seconds the first time, nothing after."""
    if hasattr(config, "workerinput") or config.option.collectonly:
        return
    if not getattr(config.option, "numprocesses", None):  # one process: collection imports the same libraries, and
        build_shared_models()  # two threads importing transformers at once break its lazy imports
        return
    # the xdist controller collects nothing: the check (seconds even when nothing needs building, as it imports
    # torch and transformers) runs in the background while its workers start and collect
    config.shared_models = ThreadPoolExecutor(max_workers=1).submit(build_shared_models)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    """Wait for the build before the first test is handed out to an xdist worker."""
    build = getattr(session.config, "shared_models", None)
    if build is not None:
        build.result()  # re-raises the build's error, before any test


def pytest_collection_modifyitems(config, items):
    """Longest files first (above)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: the rest keep their order


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


@pytest.fixture(scope="session")
def tiny_lm_dir():
    """A 2-layer Llama (hidden 64) with random weights and the real SmolLM2 tokenizer and chat template:
    every export, serving and A/B path runs on it in seconds (its GGUF is 8 MB, the 135M model's 270 MB)."""
    from lab_utils.models.random_models import SMOKE_MODEL, ensure_random_model

    return ensure_random_model(SMOKE_MODEL)


@pytest.fixture(scope="session")
def finished_sft_run(tmp_path_factory, tiny_lm_dir):
    """One real sft_alpaca run, finished, on the tiny Llama: 6 steps at a high learning rate, so it has learned its
    own rows (perplexity on them 47.9k -> 42.5k; a random model starts near its vocabulary size). Export,
    evaluation, chat, serving and A/B all read it; a test that changes it copies it first."""
    from scripts import sft_alpaca

    out = tmp_path_factory.mktemp("finished_sft")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAB_OUTPUT_DIR", str(out))
        sft_alpaca.run(sft_alpaca.Params(model=tiny_lm_dir, max_rows=24, heldout_rows=2, max_steps=6, batch_size=8,
                                         lora_r=8, lora_alpha=16, learning_rate=5e-3, max_new_tokens=4,
                                         max_seq_length=128, save_steps=100, report_to="none", run_name="sft-demo",
                                         system_prompt=TUTOR_PROMPT))
    return out / "sft_alpaca" / "sft-demo"


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
