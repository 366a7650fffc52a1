import pytest

from lab_utils.core import paths


def test_explicit_beats_env_beats_default(tmp_path, monkeypatch):
    monkeypatch.delenv("LAB_MODELS_DIR", raising=False)
    monkeypatch.delenv("LAB_HOME", raising=False)
    assert paths.models_dir() == paths.REPO_ROOT / "models"
    monkeypatch.setenv("LAB_MODELS_DIR", str(tmp_path / "env"))
    assert paths.models_dir() == tmp_path / "env"
    assert paths.models_dir(tmp_path / "explicit") == tmp_path / "explicit"


def test_home_moves_every_default(tmp_path, monkeypatch):
    for var in ("LAB_MODELS_DIR", "LAB_DATA_DIR", "LAB_OUTPUT_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LAB_HOME", str(tmp_path))
    assert paths.data_dir() == tmp_path / "data"
    assert paths.output_dir() == tmp_path / "outputs"
    assert paths.models_dir() == tmp_path / "models"


def test_env_values_expand_user_and_vars(tmp_path, monkeypatch):
    monkeypatch.setenv("SOMEWHERE", str(tmp_path))
    monkeypatch.setenv("LAB_DATA_DIR", "$SOMEWHERE/datasets")
    assert paths.data_dir() == tmp_path / "datasets"


def test_find_data_file_order_and_error(tmp_path, monkeypatch):
    assert paths.find_data_file("alpaca_sample.jsonl") == paths.SAMPLES_DIR / "alpaca_sample.jsonl"
    (tmp_path / "alpaca_sample.jsonl").write_text("{}")
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    assert paths.find_data_file("alpaca_sample.jsonl") == tmp_path / "alpaca_sample.jsonl"
    with pytest.raises(paths.LabPathError, match="LAB_DATA_DIR"):
        paths.find_data_file("gsm8k/nope.jsonl")


def test_run_dir_refuses_to_overwrite_a_finished_run(tmp_path):
    run = paths.run_dir("exp", "r1", output_root=tmp_path)
    assert run == tmp_path / "exp" / "r1" and run.is_dir()
    (run / "adapter.bin").write_text("weights")
    assert paths.run_dir("exp", "r1", output_root=tmp_path) == run  # unfinished: reused (resume)
    assert (run / "adapter.bin").exists()
    paths.mark_complete(run)
    with pytest.raises(FileExistsError, match="already finished"):
        paths.run_dir("exp", "r1", output_root=tmp_path)
    assert (run / "adapter.bin").exists()
    fresh = paths.run_dir("exp", "r1", output_root=tmp_path, overwrite=True)
    assert not (fresh / "adapter.bin").exists() and not paths.is_complete(fresh)


def test_slug_makes_folder_safe_names():
    assert paths.slug("Qwen/Qwen2.5 1.5B: r=16") == "Qwen-Qwen2.5-1.5B-r=16"


def test_write_then_rename_publishes_only_what_finished(tmp_path):
    target = tmp_path / "out" / "model"
    with paths.write_then_rename(target) as staging:
        staging.mkdir()
        (staging / "weights").write_text("v1")
        assert not target.exists()  # nothing looks finished while it is being written
    assert (target / "weights").read_text() == "v1" and not staging.exists()
    with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
        with paths.write_then_rename(target):
            pass
    with pytest.raises(ValueError, match="already exists"):  # the caller chooses the error type
        with paths.write_then_rename(target, exists_error=ValueError):
            pass
    with pytest.raises(RuntimeError, match="crashed"):
        with paths.write_then_rename(target, overwrite=True) as staging:
            staging.mkdir()
            raise RuntimeError("crashed half way")
    assert (target / "weights").read_text() == "v1" and not staging.exists()  # the old one stays, no leftovers
    (tmp_path / "out" / "model.partial").mkdir()  # left by a killed process
    with paths.write_then_rename(target, overwrite=True) as staging:
        staging.mkdir()
        (staging / "weights").write_text("v2")
    assert [p.name for p in target.iterdir()] == ["weights"] and (target / "weights").read_text() == "v2"
    state = tmp_path / "state.json"
    for text in ("1", "2"):  # a file is replaced atomically
        with paths.write_then_rename(state, overwrite=True) as staging:
            staging.write_text(text)
    assert state.read_text() == "2" and not list(tmp_path.glob("*.partial"))
