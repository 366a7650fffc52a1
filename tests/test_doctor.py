"""scripts/doctor.py: env-profile parsing, the paths it reports, blocking problems and the exit status."""

import os

import pytest

from scripts import doctor


def test_env_file_expansion_like_a_shell(tmp_path):
    profile = tmp_path / "box.env"
    profile.write_text(
        "# a comment\n"
        "export LAB_HOME=${LAB_HOME:-$PWD}\n"
        "export DATA_DISK=${DATA_DISK:-/mnt/disk}   # default used: unset\n"
        "export LAB_OUTPUT_DIR=$DATA_DISK/outputs\n"
        "export LAB_MODELS_DIR=${DATA_DISK}/models\n"
        "export HF_ENDPOINT=${HF_ENDPOINT:-https://hf-mirror.com}\n"
        "LITERAL='$NOT_EXPANDED'\n"
        "export QUOTED=\"a b\"\n"
    )
    env = doctor.parse_env_file(profile, base={"PWD": "/repo", "HF_ENDPOINT": "https://example.org"})
    assert env["LAB_HOME"] == "/repo"
    assert env["DATA_DISK"] == "/mnt/disk"
    assert env["LAB_OUTPUT_DIR"] == "/mnt/disk/outputs" and env["LAB_MODELS_DIR"] == "/mnt/disk/models"
    assert env["HF_ENDPOINT"] == "https://example.org"  # already set: the default is not used
    assert env["LITERAL"] == "$NOT_EXPANDED" and env["QUOTED"] == "a b"


def test_doctor_reports_the_paths_of_an_env_file(tmp_path, monkeypatch, capsys):
    disk = tmp_path / "disk"
    (disk / "data").mkdir(parents=True)
    profile = tmp_path / "box.env"
    profile.write_text(f"export BOX={disk}\nexport LAB_OUTPUT_DIR=$BOX/outputs\nexport LAB_DATA_DIR=$BOX/data\n"
                       f"export LAB_MODELS_DIR=$BOX/models\nexport HF_HOME=$BOX/hf\n")
    for name in ("LAB_OUTPUT_DIR", "LAB_DATA_DIR", "LAB_MODELS_DIR", "HF_HOME", "BOX"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # restored after the test: doctor sets them
    code = doctor.main(["--env", str(profile)])
    out = capsys.readouterr().out
    assert f"LAB_OUTPUT_DIR  {disk / 'outputs'} (will be created under {disk}; writable)" in out
    assert f"LAB_DATA_DIR    {disk / 'data'} (exists; writable)" in out
    assert f"HF_HOME         {disk / 'hf'}" in out
    assert "[backend]" in out and ("hf on cpu" in out or "on cuda" in out)
    assert "[extras]" in out and "unsloth" in out
    assert code == 0, out


def test_unwritable_output_dir_and_missing_package_block(tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    monkeypatch.setenv("LAB_OUTPUT_DIR", str(locked / "outputs"))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("pyyaml==0.0.1  # wrong on purpose\nno-such-package-for-doctor==1.0\n")
    try:
        code = doctor.main(["--requirements", str(requirements)])
    finally:
        locked.chmod(0o700)
    out = capsys.readouterr().out
    assert "no-such-package-for-doctor==1.0 is not installed" in out
    assert "pyyaml" in out and "0.0.1 pinned" in out  # a version mismatch is a warning with its fix
    if os.geteuid() != 0:  # root can write anywhere: the missing package still blocks
        assert "NOT writable" in out
    assert code == 1


def test_doctor_says_how_many_gpus_and_what_that_allows(capsys):
    assert "0 GPUs" in doctor.what_gpus_allow(0, 0.0, deepspeed=False)
    assert "1 GPU (24 GB)" in doctor.what_gpus_allow(1, 24.0, deepspeed=False)
    four = doctor.what_gpus_allow(4, 79.6, deepspeed=False)
    assert "4 GPUs (smallest 80 GB)" in four and "--num_processes 4" in four and "make setup-deepspeed" in four
    assert "deepspeed_zero3.yaml" in doctor.what_gpus_allow(2, 40.0, deepspeed=True)
    doctor.main([])
    out = capsys.readouterr().out
    assert "scale-out" in out and "GPU" in out


@pytest.mark.gpu
def test_doctor_names_the_gpu_and_its_memory(capsys):
    import torch

    assert doctor.main([]) in (0, 1)  # pins may differ on a GPU box; the GPU line must be there
    out = capsys.readouterr().out
    props = torch.cuda.get_device_properties(0)
    assert f"cuda:0 {props.name}, {props.total_memory / 2**30:.1f} GB" in out
    assert "on cuda" in out


@pytest.fixture
def local_hub():
    """A real HTTP server on localhost standing in for a reachable hub."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_hubs_report_which_one_answers_and_never_block(local_hub, monkeypatch):
    import time

    for variable in ("LAB_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port: refused at once
    monkeypatch.setenv("MODELSCOPE_DOMAIN", local_hub)
    monkeypatch.setenv("LAB_MODEL_HUB", "huggingface")
    start = time.perf_counter()
    checks = {c.message.split()[0]: c for c in doctor.check_hubs()}
    assert time.perf_counter() - start < doctor.HUB_TIMEOUT_S + 2
    assert checks["modelscope"].level == doctor.OK and "reachable at " + local_hub in checks["modelscope"].message
    assert checks["huggingface"].level == doctor.WARN and "NOT reachable" in checks["huggingface"].message
    assert checks["huggingface"].fix == "export LAB_MODEL_HUB=modelscope (it answers)"


def test_hubs_offline_flag_skips_the_probes(monkeypatch):
    monkeypatch.setenv("LAB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://10.255.255.1")  # would hang for the whole timeout if probed
    (check,) = doctor.check_hubs()
    assert check.level == doctor.OK and check.message.startswith("LAB_OFFLINE=1: no downloads")
