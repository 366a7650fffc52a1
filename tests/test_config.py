import dataclasses
import importlib
from dataclasses import dataclass, field

import pytest

from lab_utils.core.config import (ConfigError, config_yaml, field_help, knob_sections, make_params, params_from,
                                   parse_args)
from lab_utils.core.errors import ParamError
from lab_utils.core.paths import REPO_ROOT


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


def test_cli_unknown_config_key_exits_with_one_line(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("nope: 1\n")
    with pytest.raises(SystemExit):
        parse_args(P, ["--config", str(config)])
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unknown parameter(s) ['nope']" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        parse_args(P, ["--lora_rank", "8"])  # a typo on the command line: one line too, not the usage block
    err = capsys.readouterr().err
    assert err.startswith("error: unrecognized arguments: --lora_rank 8") and err.count("\n") == 1


def test_params_from_notebook_globals():
    assert params_from(P, {"lora_r": 2, "unrelated": 1}).lora_r == 2


def test_knob_values_that_can_never_work_are_refused_before_anything_loads(capsys):
    """A config, a command line and a notebook's parameters cell are checked alike, each bad knob named."""
    from scripts import grpo_gsm8k, sft_alpaca

    with pytest.raises(ParamError, match=r"^lora_r=0: expected 1 or more$"):
        params_from(P, {"lora_r": 0})
    for argv, expected in ((["--max_completion_length", "-3"], "max_completion_length=-3: expected 1 or more"),
                           (["--rollouts", "xyz"], "rollouts='xyz': expected auto | vllm | hf"),
                           (["--num_generations", "1"], "num_generations=1: expected 2 or more")):
        with pytest.raises(SystemExit):
            grpo_gsm8k.main([*argv, "--run_name", "never"])
        assert capsys.readouterr().err == f"error: {expected}\n", argv
    with pytest.raises(SystemExit):
        grpo_gsm8k.main(["--temperature", "-1", "--learning_rate", "0", "--run_name", "never"])
    err = capsys.readouterr().err  # every bad knob in the one line, not only the first
    assert err.count("\n") == 1 and "learning_rate=0.0: expected a number above 0" in err
    assert "temperature=-1.0: expected 0 or more" in err
    for argv, expected in ((["--report_to", "tensorbored"], "report_to='tensorbored': expected tensorboard | wandb"),
                           (["--lora_dropout", "1.0"], "lora_dropout=1.0: expected a share in [0, 1)"),
                           (["--batch_size", "0"], "batch_size=0: expected 1 or more")):
        with pytest.raises(SystemExit):
            sft_alpaca.main([*argv, "--run_name", "never"])
        assert capsys.readouterr().err.startswith(f"error: {expected}"), argv
    assert params_from(sft_alpaca.Params, {"report_to": "None", "temperature": 0}).report_to == "None"


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


def test_every_lab_error_subclasses_lab_error_and_keeps_its_builtin_base():
    from data_loaders.common import DataError
    from lab_utils.core.backend import UnslothAlreadyImported
    from lab_utils.core.errors import LabError, MachineError, RunExistsError
    from lab_utils.core.paths import LabPathError
    from lab_utils.export import ollama_templates
    from lab_utils.export.merge import ExportError
    from lab_utils.models import chat
    from lab_utils.models.registry import ModelNotFound

    assert ollama_templates.ChatTemplateError is chat.ChatTemplateError  # one class, not two
    for error, builtin in ((DataError, ValueError), (ConfigError, ValueError), (ModelNotFound, ValueError),
                           (LabPathError, FileNotFoundError), (ExportError, RuntimeError), (MachineError, RuntimeError),
                           (UnslothAlreadyImported, RuntimeError), (RunExistsError, FileExistsError),
                           (chat.ChatTemplateError, ValueError)):
        assert issubclass(error, LabError) and issubclass(error, builtin), error


def test_an_internal_error_keeps_its_traceback(monkeypatch):
    """A torch shape mismatch inside run() is not the user's input: no one-line SystemExit, the real exception."""
    import torch

    from scripts import sft_alpaca

    monkeypatch.delenv("LAB_DEBUG", raising=False)
    monkeypatch.setattr(sft_alpaca, "load_data", lambda p: torch.zeros(2, 3) @ torch.zeros(2, 3))
    with pytest.raises(RuntimeError, match="cannot be multiplied") as raised:
        sft_alpaca.main(["--run_name", "internal-error"])
    assert raised.traceback[-1].name == "<lambda>"  # the traceback reaches the line that failed


@pytest.mark.parametrize("where", ["GPU", "CPU"])
def test_out_of_memory_is_one_line_naming_what_to_lower(monkeypatch, where):
    import torch

    from scripts import sft_alpaca, sft_vision

    def out_of_memory(p):
        if where == "GPU":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 8589934592 bytes")

    monkeypatch.delenv("LAB_DEBUG", raising=False)
    monkeypatch.setattr(sft_alpaca, "load_data", out_of_memory)
    with pytest.raises(SystemExit) as exit_:
        sft_alpaca.main(["--run_name", "oom", "--batch_size", "4"])
    message = str(exit_.value.code)
    assert message.startswith(f"error: out of memory on the {where}: lower batch_size (now 4), max_seq_length (now 256)"
                              ), message
    assert "gradient_checkpointing" in message and "\n" not in message
    assert ("load_in_4bit" in message) == (where == "GPU")  # 4-bit weights need a CUDA GPU
    monkeypatch.setattr(sft_vision, "load_data", out_of_memory)
    with pytest.raises(SystemExit) as exit_:
        sft_vision.main(["--run_name", "oom"])
    assert "max_image_side (now" in str(exit_.value.code) or "max_pixels (now" in str(exit_.value.code)


def test_a_full_disk_or_an_unwritable_folder_is_one_line_and_other_os_errors_keep_their_traceback(monkeypatch):
    import errno

    from scripts import sft_alpaca

    def fails_with(err):
        def step(p):
            raise err
        return step

    monkeypatch.delenv("LAB_DEBUG", raising=False)
    for err, expected in ((OSError(errno.ENOSPC, "No space left on device", "/runs/demo/model.safetensors"),
                           "error: no space left on the disk (/runs/demo/model.safetensors): free some, or point "
                           "LAB_OUTPUT_DIR"),
                          (PermissionError(errno.EACCES, "Permission denied", "/runs"),
                           "error: permission denied (/runs): point LAB_OUTPUT_DIR")):
        monkeypatch.setattr(sft_alpaca, "load_data", fails_with(err))
        with pytest.raises(SystemExit) as exit_:
            sft_alpaca.main(["--run_name", "disk"])
        assert str(exit_.value.code).startswith(expected) and "\n" not in str(exit_.value.code)
    monkeypatch.setattr(sft_alpaca, "load_data", fails_with(OSError(errno.EIO, "Input/output error")))
    with pytest.raises(OSError, match="Input/output error"):
        sft_alpaca.main(["--run_name", "disk"])


# ---- knobs explain themselves: help from the comments, --help, --print_config ----

@dataclass(kw_only=True)
class Base:
    knob_section = "run"

    seed: int = 42  # random seed
    # the comment block right above a field is its help
    # when the line has no comment of its own
    steps: int = 3
    quiet: bool = False  # base help


@dataclass(kw_only=True)
class Child(Base):
    data_file: str = "x.jsonl"  # under LAB_DATA_DIR
    quiet: bool = True
    ranks: list[int] = field(  # a comment on any line of a multi-line field counts
        default_factory=lambda: [1, 2])
    steps: int = 5  # the child's own words win


def test_field_help_reads_the_comment_on_the_line_else_the_block_above_else_the_base_class():
    helps = field_help(Child)
    assert helps["seed"] == "random seed"
    assert helps["data_file"] == "under LAB_DATA_DIR"
    assert helps["quiet"] == "base help"  # redeclared to change the default: the shared group's help stays
    assert helps["ranks"] == "a comment on any line of a multi-line field counts"
    assert helps["steps"] == "the child's own words win"
    assert field_help(Base)["steps"] == ("the comment block right above a field is its help "
                                         "when the line has no comment of its own")
    assert field_help(P)["lora_r"] == ""  # no comment: no help (test_every_knob_has_help catches it)


def test_knob_sections_put_model_first_then_own_knobs_then_the_shared_groups():
    from scripts.sft_alpaca import Params

    sections = knob_sections(Params)
    assert [title for title, _ in sections] == ["model, data and method", "LoRA", "optimisation", "evaluation", "run"]
    assert sections[0][1][0] == "model" and "data_file" in sections[0][1] and "lora_r" in sections[1][1]
    assert sorted(n for _, names in sections for n in names) == sorted(f.name for f in dataclasses.fields(Params))
    assert knob_sections(P) == [(None, [f.name for f in dataclasses.fields(P)])]  # no shared groups: no headings


def script_params():
    """Every script with a Params dataclass: its knobs are what users set."""
    for path in sorted((REPO_ROOT / "scripts").glob("*.py")):
        module = importlib.import_module(f"scripts.{path.stem}")
        if dataclasses.is_dataclass(getattr(module, "Params", None)):
            yield path.stem, module.Params


@pytest.mark.parametrize("name,params_cls", list(script_params()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_knob_has_help(name, params_cls):
    missing = [k for k, text in field_help(params_cls).items() if not text]
    assert not missing, (f"scripts/{name}.py: no help for {missing}: write a `# comment` at the end of each "
                         f"field's line in its Params (or on the line above)")


def test_help_shows_every_option_with_its_text_type_and_default(capsys):
    from scripts.sft_alpaca import Params, main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for name, help_text in field_help(Params).items():
        assert f"--{name} " in text, name
        assert " ".join(help_text.split()) in text, name
    assert "--learning_rate float peak learning rate (default: 0.0002)" in text
    assert "--print_config" in text and "--config CONFIG" in text


def test_print_config_is_a_commented_yaml_that_loads_back(tmp_path, capsys):
    from scripts.grpo_gsm8k import Params, main

    with pytest.raises(SystemExit) as exit_:
        main(["--print_config", "--max_steps", "3", "--reward_names", "[correctness]", "--reward_weights", "[1.0]"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    knob_lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(knob_lines) == len(dataclasses.fields(Params))
    helps = field_help(Params)
    assert all(line.split(":", 1)[0] in helps and line.endswith(helps[line.split(":", 1)[0]]) for line in knob_lines)
    config = tmp_path / "start.yaml"
    config.write_text(text, encoding="utf-8")
    loaded = make_params(Params, config)
    assert loaded == Params(max_steps=3, reward_names=["correctness"], reward_weights=[1.0])


def test_print_config_round_trips_awkward_values(tmp_path):
    from scripts.sft_medical import Params

    p = Params(system_prompt="第一行\n第二行: 'quoted' # not a comment", columns={"ask": "问", "answer": "答"})
    config = tmp_path / "c.yaml"
    config.write_text(config_yaml(p, "title"), encoding="utf-8")
    assert make_params(Params, config) == p


# ---- config files: any encoding the lab reads, syntax errors as one line ----

SYSTEM_ZH = "你是一名耐心的医学助手。"
SYSTEM_TW = "你是一位耐心的醫學助理。"


@pytest.mark.parametrize("encoding,system_prompt", [("utf-8-sig", SYSTEM_ZH), ("utf-16", SYSTEM_ZH), ("gbk", SYSTEM_ZH),
                                                     ("big5", SYSTEM_TW), ("utf-8", SYSTEM_TW)],
                         ids=["utf-8-bom", "utf-16", "gbk", "big5", "utf-8"])
def test_configs_in_every_encoding_load_to_the_right_values(tmp_path, encoding, system_prompt):
    """Windows Notepad's "ANSI" on a Chinese system is GBK (Big5 on a traditional one), its "Unicode" UTF-16."""
    config = tmp_path / f"{encoding}.yaml"
    text = f"# {system_prompt[:4]}\nsystem_prompt: {system_prompt}\nlora_r: 8\nlearning_rate: 1e-4\n"
    config.write_bytes(text.encode(encoding))
    p = make_params(P, config)
    assert (p.system_prompt, p.lora_r, p.learning_rate) == (system_prompt, 8, 1e-4)


def test_a_tab_indented_config_is_one_line_with_line_and_column(tmp_path, capsys):
    config = tmp_path / "tabs.yaml"
    config.write_text("lora_r: 8\nranks:\n\t- 1\n\t- 2\n")
    with pytest.raises(ConfigError) as raised:
        make_params(P, config)
    message = str(raised.value)
    assert message.startswith(f"{config}, line 3, column 1: found character '\\t' that cannot start any token")
    assert "\n" not in message and "tabs" in message
    with pytest.raises(SystemExit):
        parse_args(P, ["--config", str(config)])
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "line 3, column 1" in err and err.count("\n") == 1


def test_an_undecodable_or_missing_config_is_one_line(tmp_path):
    config = tmp_path / "binary.yaml"
    config.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ConfigError, match=r"^config binary.yaml: this is a PNG image, not a YAML config$"):
        make_params(P, config)
    with pytest.raises(ConfigError, match="config file .*nowhere.yaml' not found"):
        make_params(P, tmp_path / "nowhere.yaml")
