"""Modelfile chat templates: each family's Go template renders a multi-turn conversation exactly like the
family's official Jinja template (applied with transformers' apply_chat_template), and the renderer itself."""

import json
from pathlib import Path

import pytest

from lab_utils.export.gguf import write_modelfile
from lab_utils.export.merge import ExportError
from lab_utils.export.ollama_templates import (FAMILIES, ChatTemplateError, choose_template, detect_family,
                                               jinja_render, ollama_render)
from lab_utils.export.go_template import TemplateError, render

TEMPLATES = Path(__file__).parent / "data" / "templates"  # upstream files, sources in its README.md
# family -> (the model maker's template file it must match, its BOS and EOS tokens)
UPSTREAM = {
    "chatml": ("qwen2.5.jinja", "<|endoftext|>", "<|im_end|>"),
    "qwen3": ("qwen3.jinja", "<|endoftext|>", "<|im_end|>"),
    "llama3": ("llama3.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "gemma": ("gemma3.jinja", "<bos>", "<eos>"),
    "mistral": ("mistral-v1.jinja", "<s>", "</s>"),
    "mistral-v3": ("mistral-v3.jinja", "<s>", "</s>"),
    "mistral-legacy": ("mistral-v0.2-legacy.jinja", "<s>", "</s>"),
}
# more upstream files and the family each one must be detected as
MORE_UPSTREAM = {"qwen3-0.6b-llamacpp.jinja": ("qwen3", "<|endoftext|>", "<|im_end|>"),
                 "qwen3-vl.jinja": ("chatml", "<|endoftext|>", "<|im_end|>")}
CASES = {**{name: (file, name, bos, eos) for name, (file, bos, eos) in UPSTREAM.items()},
         **{file: (file, family, bos, eos) for file, (family, bos, eos) in MORE_UPSTREAM.items()}}
CONVERSATION = [
    {"role": "system", "content": "你是一名耐心的医学助手。"},
    {"role": "user", "content": "最近总是头疼，怎么办？"},
    {"role": "assistant", "content": "先保证睡眠，每隔一小时活动一下颈肩。"},
    {"role": "user", "content": "要吃药吗？"},
    {"role": "assistant", "content": "偶尔疼可以按说明书用止痛药；持续加重请就医。"},
    {"role": "user", "content": "Thanks! One more: is coffee OK?"},
]


@pytest.fixture(scope="module")
def base_tokenizer():
    from lab_utils.models.registry import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model("smollm2-135m"))


def family_tokenizer(base, family, file=None):
    """The embedded tokenizer wearing an upstream template file and its BOS/EOS tokens."""
    import copy

    file, _, bos, eos = CASES[file or family]
    tokenizer = copy.deepcopy(base)
    tokenizer.chat_template = (TEMPLATES / file).read_text(encoding="utf-8")
    tokenizer.add_special_tokens({"bos_token": bos, "eos_token": eos})
    return tokenizer


def test_every_family_is_checked_against_an_upstream_file():
    assert set(UPSTREAM) == set(FAMILIES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_modelfile_template_renders_the_conversation_like_the_upstream_template(base_tokenizer, case):
    from jinja2 import TemplateError as JinjaError

    file, family, _, _ = CASES[case]
    tokenizer = family_tokenizer(base_tokenizer, family, case)
    assert detect_family(tokenizer) == family
    try:
        jinja_render(tokenizer, CONVERSATION[:2])
        conversation = CONVERSATION
    except JinjaError:
        conversation = CONVERSATION[1:]  # the legacy Mistral template refuses a system role
    switches = (None, False, True) if "enable_thinking" in tokenizer.chat_template else (None,)
    for turns in range(2, len(conversation) + 1):  # every prefix ending on a user turn: the generation prompt
        messages = conversation[:turns]
        if messages[-1]["role"] != "user":
            continue
        for think in switches:
            expected = jinja_render(tokenizer, messages, **({} if think is None else {"enable_thinking": think}))
            assert ollama_render(FAMILIES[family].go_template, messages, think=think) == expected, (file, think)


def test_mistral_versions_differ_where_upstream_says(base_tokenizer):
    """The details of issue 25: v1 spaces around [INST], v3 none before [/INST] and its system in the last turn."""
    conversation = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Capital of France?"},
                    {"role": "assistant", "content": "Paris"}, {"role": "user", "content": "And Spain?"}]
    v1 = ollama_render(FAMILIES["mistral"].go_template, conversation)
    v3 = ollama_render(FAMILIES["mistral-v3"].go_template, conversation)
    assert v1 == " [INST] SYS\n\nCapital of France? [/INST] Paris</s> [INST] And Spain? [/INST]"
    assert v3 == "[INST] Capital of France?[/INST] Paris</s>[INST] SYS\n\nAnd Spain?[/INST]"


@pytest.mark.parametrize("family", ["mistral", "mistral-v3"])
def test_upstream_jinja_files_render_what_llama_cpp_expects(base_tokenizer, family):
    """The stored template files are the ones llama.cpp tests: same conversation, same expected text."""
    data = json.loads((TEMPLATES / "llamacpp_expected.json").read_text(encoding="utf-8"))
    tokenizer = family_tokenizer(base_tokenizer, family)
    text = tokenizer.apply_chat_template(data["conversation"], tokenize=False)
    expected = data["expected_jinja"][UPSTREAM[family][0].removesuffix(".jinja")]["text"]
    assert text.removeprefix(tokenizer.bos_token) == expected
    if family == "mistral":  # v3's Jinja trims answers (the Go template cannot), v1's does not
        rendered = ollama_render(FAMILIES[family].go_template, data["conversation"])
        assert rendered == text.removeprefix(tokenizer.bos_token)


OLLAMA = TEMPLATES / "ollama"
# the conversations of TestTemplate in ollama/ollama template/template_test.go
OLLAMA_CONVERSATIONS = {
    "user": [("user", "Hello, how are you?")],
    "user-assistant-user": [("user", "Hello, how are you?"),
                            ("assistant", "I'm doing great. How can I help you today?"),
                            ("user", "I'd like to show off how chat templating works!")],
}
OLLAMA_CONVERSATIONS["system-user-assistant-user"] = ([("system", "You are a helpful assistant.")]
                                                      + OLLAMA_CONVERSATIONS["user-assistant-user"])


@pytest.mark.parametrize("template", sorted(p.name for p in OLLAMA.glob("*.gotmpl")))
def test_ollama_stock_templates_render_like_ollama(template):
    assert len(list(OLLAMA.glob("*.gotmpl"))) == 20
    for name, turns in OLLAMA_CONVERSATIONS.items():
        got = ollama_render((OLLAMA / template).read_text(encoding="utf-8"),
                            [{"role": r, "content": c} for r, c in turns])
        # Ollama's own test drops one trailing space for these five before comparing
        if template in ("chatqa.gotmpl", "llama2-chat.gotmpl", "mistral-instruct.gotmpl", "openchat.gotmpl",
                        "vicuna.gotmpl"):
            got = got.removesuffix(" ")
        assert got == (OLLAMA / "expected" / template / name).read_text(encoding="utf-8"), (template, name)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_write_modelfile_chooses_the_family_from_the_tokenizer(base_tokenizer, family, tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    text = write_modelfile(gguf, family_tokenizer(base_tokenizer, family), "SYS").read_text()
    assert f'TEMPLATE """{FAMILIES[family].go_template}"""' in text
    assert all(f'PARAMETER stop "{stop}"' in text for stop in FAMILIES[family].stops)


def test_unknown_family_is_one_error_naming_the_template_option(base_tokenizer, tmp_path):
    tokenizer = family_tokenizer(base_tokenizer, "chatml")
    tokenizer.chat_template = "{% for m in messages %}### {{ m.role }}: {{ m.content }}\n{% endfor %}### assistant:"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ExportError) as error:
        write_modelfile(gguf, tokenizer)
    message = str(error.value)
    assert "unknown chat template family" in message and "pass template=" in message and "\n" not in message
    assert not (tmp_path / "Modelfile").exists()
    custom = tmp_path / "alpaca.tmpl"
    custom.write_text("{{- range .Messages }}### {{ .Role }}: {{ .Content }}\n{{ end }}### assistant:")
    text = write_modelfile(gguf, tokenizer, template=str(custom)).read_text()
    assert 'TEMPLATE """{{- range .Messages }}### {{ .Role }}' in text
    assert ollama_render(custom.read_text(), CONVERSATION[1:4]) == jinja_render(tokenizer, CONVERSATION[1:4])


def test_a_known_family_that_renders_differently_is_caught(base_tokenizer):
    tokenizer = family_tokenizer(base_tokenizer, "llama3")
    # a Llama 3.1-style system preamble the llama3 Go template does not write
    tokenizer.chat_template = tokenizer.chat_template.replace(
        "message['content'] | trim",
        "(('Cutting Knowledge Date: December 2023\\n\\n' if message['role'] == 'system' else '') "
        "+ message['content']) | trim")
    with pytest.raises(ChatTemplateError,
                       match=r"llama3 Modelfile template renders a conversation differently .* at character \d+"):
        choose_template(tokenizer)
    assert choose_template(tokenizer, "llama3")[0] == "llama3"  # forcing a family skips the check


def test_no_chat_template_and_a_missing_template_file(base_tokenizer):
    import copy

    tokenizer = copy.deepcopy(base_tokenizer)
    tokenizer.chat_template = None
    with pytest.raises(ChatTemplateError, match="has no chat template.*pass template="):
        detect_family(tokenizer)
    with pytest.raises(ChatTemplateError, match="neither a family"):
        choose_template(base_tokenizer, "no/such/file.tmpl")


# --- the Go template subset --------------------------------------------------------------------------

def test_go_template_subset_semantics():
    data = {"Messages": [{"Role": "user", "Content": "a"}, {"Role": "assistant", "Content": "b"}], "System": ""}
    assert render("x {{- \" y \" -}} z", {}) == "x y z"  # trim markers eat the spaces around the action
    assert render("{{ range $i, $m := .Messages }}{{ $i }}={{ $m.Role }};{{ end }}", data) == "0=user;1=assistant;"
    assert render("{{ range .Messages }}{{ if eq .Role \"user\" \"system\" }}U{{ else if eq .Role \"assistant\" }}A"
                  "{{ else }}?{{ end }}{{ end }}", data) == "UA"
    assert render("{{ $n := 0 }}{{ range .Messages }}{{ $n = .Content }}{{ end }}{{ $n }}", data) == "b"
    assert render("{{ if and .System (eq 1 1) }}yes{{ else }}no{{ end }}", data) == "no"
    assert render("{{ len (slice .Messages 1) }} {{ (index .Messages 1).Role }}", data) == "1 assistant"
    three = {"Messages": data["Messages"] + [{"Role": "user", "Content": "c"}]}
    assert render("{{ range slice .Messages 1 }}{{ .Content }}{{ end }}|"
                  "{{ range slice .Messages 0 1 }}{{ .Content }}{{ end }}", three) == "bc|a"  # Go's x[1:] and x[0:1]
    assert render('{{ printf "%s=%d %q %v%%" "n" 3 "x" true }}', {}) == 'n=3 "x" true%'
    assert render("{{ range .Messages }}{{ if eq .Role \"assistant\" }}{{ continue }}{{ end }}{{ .Content }}{{ end }}",
                  three) == "ac"
    assert render("{{ range .Messages }}{{ if eq .Role \"assistant\" }}{{ break }}{{ end }}{{ .Content }}{{ end }}",
                  three) == "a"
    assert render("{{ range .Missing }}x{{ else }}empty{{ end }}", {"Missing": []}) == "empty"
    assert render("{{ not .System }} {{ $.System }}|", data) == "true |"
    for bad in ("{{ if .System }}x", "{{ end }}", "{{ with .System }}x{{ end }}", "{{ .System | printf \"%s\" }}",
                "{{ json .Messages }}", "{{ break }}", "{{ $undeclared = 1 }}", "{{ .Nope }}"):
        with pytest.raises(TemplateError):
            render(bad, data)
