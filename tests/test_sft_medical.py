"""The medical experiment end to end on the embedded model, and its bad-input contract."""

import struct
import zlib

import pytest
import yaml

from lab_utils.core.artifacts import read_json
from lab_utils.core.notebooks import NOTEBOOKS_DIR, execute
from lab_utils.core.paths import REPO_ROOT, output_dir
from scripts import sft_medical
from tests.helpers import TINY_LM

TINY = dict(model=TINY_LM, max_steps=2, batch_size=4, lora_r=4, lora_alpha=8, heldout_rows=1, max_new_tokens=4,
            max_seq_length=256, save_steps=2, report_to="none")


def run_folder(name):
    return output_dir() / "sft_medical" / name


def test_cli_trains_evaluates_and_reports_the_encoding(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "data_file": "medical/dialogues_gbk.csv"}))
    sft_medical.main(["--config", str(config), "--run_name", "cli", "--lora_r", "2"])
    run = run_folder("cli")
    metrics = read_json(run / "metrics.json")
    assert metrics["data"]["encoding"] == "gb18030" and metrics["data"]["rows_read"] == 30
    assert read_json(run / "params.json")["lora_r"] == 2
    scores = read_json(run / "eval.json")
    assert set(scores) == {"base", "tuned"} and scores["base"]["n"] == 1
    assert metrics["tuned_rougeL"] == scores["tuned"]["rougeL"] and metrics["global_step"] == 2
    for name in ("eval.png", "lengths.png", "training.png", "samples.md", "skipped_rows.csv",
                 "adapter/adapter_config.json", "run_complete.json"):
        assert (run / name).exists(), name


@pytest.mark.notebook
def test_notebook_runs_under_papermill(tmp_path):
    execute(NOTEBOOKS_DIR / "sft_medical.ipynb", tmp_path / "out.ipynb",
            {**TINY, "data_file": "medical/dialogues_big5.csv", "run_name": "nb", "validation_fraction": 0.15,
             "test_fraction": 0.15})
    run = run_folder("nb")
    assert read_json(run / "metrics.json")["data"]["encoding"] == "big5"
    assert (run / "run_complete.json").exists()


def png_bytes() -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
            + chunk(b"IEND", b""))


BAD_INPUTS = {  # case: (file name, bytes, what the one-line error must mention)
    "png": ("photo.csv", png_bytes(), "PNG"),
    "empty": ("empty.csv", b"", "empty"),
    "header_only": ("header.csv", "department,title,ask,answer\n".encode(), "no data rows"),
    "shift_jis": ("jp.csv", "質問,回答\nこんにちは、お元気ですか,はい、元気です\n".encode("shift_jis"), "encoding"),
    "missing_columns": ("cols.csv", "name,age\n张三,30\n".encode(), "headers"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_clear_line_and_leaves_no_run(case, tmp_path):
    name, content, expected = BAD_INPUTS[case]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError) as failure:
        sft_medical.run(sft_medical.Params(**TINY, data_file=str(path), run_name=case))
    message = str(failure.value)
    assert path.name in message and "\n" not in message
    assert expected.lower() in message.lower(), message
    assert not run_folder(case).exists()


def test_missing_file_names_the_variable():
    with pytest.raises(FileNotFoundError, match="LAB_DATA_DIR"):
        sft_medical.run(sft_medical.Params(**TINY, data_file="chinese-medical-dialogue/nope.csv", run_name="missing"))
    assert not run_folder("missing").exists()


@pytest.mark.gpu
def test_gpu_config_runs(monkeypatch, real_data_dir):
    monkeypatch.setenv("LAB_DATA_DIR", str(real_data_dir))
    config = yaml.safe_load((REPO_ROOT / "configs" / "sft_medical_gpu.yaml").read_text())
    params = {**config, **TINY, "model": "smollm2-135m", "run_name": "gpu"}  # no network on the GPU box
    metrics = sft_medical.run(sft_medical.Params(**params))["metrics"]
    assert metrics["device"] == "cuda" and metrics["data"]["rows_read"] == 7644
