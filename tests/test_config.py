from dataclasses import dataclass

import pytest

from lab_utils.core.config import ConfigError, make_params, parse_args, params_from


@dataclass(kw_only=True)
class P:
    model: str = "smollm2-135m"
    lora_r: int = 16
    learning_rate: float = 2e-4
    use_dora: bool = False
    system_prompt: str = ""
    ranks: list = None


def test_yaml_then_overrides(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("lora_r: 8\nlearning_rate: 1.0e-4\n")
    p = make_params(P, config, {"learning_rate": 5e-5})
    assert (p.lora_r, p.learning_rate, p.model) == (8, 5e-5, "smollm2-135m")


def test_unknown_key_is_an_error_naming_the_file(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("lora_rank: 8\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown parameter\(s\) \['lora_rank'\]"):
        make_params(P, config)


def test_cli_values_take_the_field_types(tmp_path):
    p = parse_args(P, ["--lora_r", "4", "--learning_rate", "1e-3", "--use_dora", "true", "--system_prompt", "123",
                       "--ranks", "[1, 2, 4]"])
    assert (p.lora_r, p.learning_rate, p.use_dora, p.system_prompt, p.ranks) == (4, 1e-3, True, "123", [1, 2, 4])


def test_cli_unknown_config_key_exits_with_a_message(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("nope: 1\n")
    with pytest.raises(SystemExit):
        parse_args(P, ["--config", str(config)])
    assert "unknown parameter" in capsys.readouterr().err


def test_params_from_notebook_globals():
    assert params_from(P, {"lora_r": 2, "unrelated": 1}).lora_r == 2


def test_script_main_turns_bad_input_into_one_line(capsys, monkeypatch):
    from scripts import sft_alpaca

    monkeypatch.delenv("LAB_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_:
        sft_alpaca.main(["--model", "no-such-model", "--run_name", "bad-model"])
    message = str(exit_.value.code)
    assert message.startswith("error: unknown model 'no-such-model'") and "\n" not in message
    monkeypatch.setenv("LAB_DEBUG", "1")
    with pytest.raises(ValueError, match="unknown model"):
        sft_alpaca.main(["--model", "no-such-model", "--run_name", "bad-model-2"])
