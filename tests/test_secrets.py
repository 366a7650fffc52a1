"""No token ever lands in a file the lab writes or in what it prints: real runs with fake tokens in the
environment (a script, a training notebook under the batch runner, doctor with a profile that exports one),
then every output file searched byte by byte. The batch's run is also sft_alpaca.ipynb's papermill test."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import yaml

from lab_utils.core.config import save_params
from lab_utils.core.paths import REPO_ROOT, output_dir
from tests.helpers import TINY_LM

FAKE = {"HF_TOKEN": "hf_FAKEhfTOKEN0123456789abcdef", "WANDB_API_KEY": "FAKEwandbKEY0123456789abcdef0123456789ab",
        "SWANLAB_API_KEY": "FAKEswanlabKEY0123456789", "MODELSCOPE_API_TOKEN": "ms-FAKEmodelscope-0123456789"}


def lab(*args, env) -> str:
    """Run a lab command with the fake tokens set; its stdout + stderr (what a terminal or a log would keep)."""
    done = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def leaks(root) -> list[str]:
    return [f"{path} holds ${name}" for path in root.rglob("*") if path.is_file()
            for name, value in FAKE.items() if value.encode() in path.read_bytes()]


@pytest.mark.notebook
def test_no_token_in_params_logs_reports_or_executed_notebooks(tmp_path):
    env = {**os.environ, **FAKE, "PYTHONPATH": str(REPO_ROOT)}
    printed = lab("-m", "scripts.teach_svd", "--image", "synthetic", "--max_side", "48", "--run_name", "script",
                  env=env)
    batch_file = tmp_path / "secrets.yaml"
    # TensorBoard on (the config's report_to): its logs are searched too
    batch_file.write_text(yaml.safe_dump({"name": "secrets", "runs": [{
        "notebook": "sft_alpaca", "config": "configs/sft_alpaca.yaml", "name": "tiny",
        "params": {"model": TINY_LM, "max_rows": 40, "heldout_rows": 2, "max_steps": 1, "batch_size": 4, "lora_r": 4,
                   "lora_alpha": 8, "max_new_tokens": 2, "max_seq_length": 128, "save_steps": 1}}]}))
    printed += lab("-m", "scripts.batch", str(batch_file), env=env)
    profile = tmp_path / "box.env"  # a profile that exports a token, as env/.env.example suggests
    profile.write_text(f"export LAB_OUTPUT_DIR={output_dir()}\nexport HF_TOKEN={FAKE['HF_TOKEN']}\n")
    doctor = subprocess.run(
        [sys.executable, "-m", "scripts.doctor", "--env", str(profile)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # its exit status judges the box, not us
    printed += doctor.stdout + doctor.stderr
    (output_dir() / "terminal.log").write_text(printed)

    written = list(output_dir().rglob("*"))
    assert any(p.name == "params.json" for p in written) and any(p.suffix == ".ipynb" for p in written)
    assert any(p.name == "run.log" for p in written) and any(p.name == "report.html" for p in written)
    assert any("tfevents" in p.name for p in written)
    assert "HF_TOKEN=***" in printed  # doctor says the profile sets it, not what it is
    assert leaks(output_dir()) == []
    # the batch ran sft_alpaca.ipynb under papermill (the notebook test of that experiment): finished, its 2 steps
    # trained, the loss plot shown
    batch_run = output_dir() / "batch" / "secrets" / "tiny"
    assert (batch_run / "sft_alpaca" / "tiny" / "run_complete.json").exists()
    assert json.loads((batch_run / "sft_alpaca" / "tiny" / "metrics.json").read_text())["global_step"] == 1
    executed = json.loads((batch_run / "sft_alpaca.ipynb").read_text())
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in executed["cells"] for o in c.get("outputs", [])), "the loss plot is shown"


def test_params_json_masks_a_credential_given_as_a_parameter(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE["HF_TOKEN"])

    @dataclasses.dataclass
    class Params:
        api_key: str = "sk-local-server-key"
        hub_token: str = "hf_another"
        note: str = FAKE["HF_TOKEN"]  # a token pasted into an ordinary field
        max_new_tokens: int = 8
        run_name: str = "demo"

    saved = json.loads(save_params(Params(), tmp_path / "params.json").read_text())
    assert saved == {"api_key": "***", "hub_token": "***", "note": "***", "max_new_tokens": 8, "run_name": "demo"}
