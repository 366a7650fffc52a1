"""Modelfile chat templates: each family's Go template renders a multi-turn conversation exactly like the
family's official Jinja template (applied with transformers' apply_chat_template), and the renderer itself."""

import pytest

from lab_utils.export import ollama_templates as chat_templates
from lab_utils.export.gguf import write_modelfile
from lab_utils.export.merge import ExportError
from lab_utils.export.ollama_templates import (FAMILIES, ChatTemplateError, choose_template, detect_family, jinja_render, ollama_render)
from lab_utils.export.go_template import TemplateError, render

# The official chat templates (tokenizer_config.json "chat_template"), text-only parts, of one model per family.
OFFICIAL = {
    # Qwen/Qwen2.5-1.5B-Instruct, without its tool-calling branches
    "chatml": (
        "{%- if messages[0]['role'] == 'system' %}\n"
        "    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
        "{%- else %}\n"
        "    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
        "{%- endif %}\n"
        "{%- for message in messages %}\n"
        "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\") %}\n"
        "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
        "    {%- endif %}\n"
        "{%- endfor %}\n"
        "{%- if add_generation_prompt %}\n"
        "    {{- '<|im_start|>assistant\\n' }}\n"
        "{%- endif %}\n"),
    # meta-llama/Meta-Llama-3-8B-Instruct
    "llama3": (
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
        "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
        "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"),
    # google/gemma-3-1b-it, text content only
    "gemma": (
        "{{ bos_token }}\n"
        "{%- if messages[0]['role'] == 'system' -%}\n"
        "    {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
        "    {%- set loop_messages = messages[1:] -%}\n"
        "{%- else -%}\n"
        "    {%- set first_user_prefix = \"\" -%}\n"
        "    {%- set loop_messages = messages -%}\n"
        "{%- endif -%}\n"
        "{%- for message in loop_messages -%}\n"
        "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
        "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
        "    {%- endif -%}\n"
        "    {%- if (message['role'] == 'assistant') -%}\n"
        "        {%- set role = \"model\" -%}\n"
        "    {%- else -%}\n"
        "        {%- set role = message['role'] -%}\n"
        "    {%- endif -%}\n"
        "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
        "    {%- if message['content'] is string -%}\n"
        "        {{ message['content'] | trim }}\n"
        "    {%- else -%}\n"
        "        {{ raise_exception(\"Invalid content type\") }}\n"
        "    {%- endif -%}\n"
        "    {{ '<end_of_turn>\\n' }}\n"
        "{%- endfor -%}\n"
        "{%- if add_generation_prompt -%}\n"
        "    {{'<start_of_turn>model\\n'}}\n"
        "{%- endif -%}\n"),
    # mistralai/Mistral-7B-Instruct-v0.2
    "mistral": (
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
        "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"),
}
SPECIAL = {"chatml": ("<|endoftext|>", "<|im_end|>"), "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
           "gemma": ("<bos>", "<eos>"), "mistral": ("<s>", "</s>")}
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


def family_tokenizer(base, family):
    """The embedded tokenizer wearing a family's official template and BOS/EOS tokens."""
    import copy

    tokenizer = copy.deepcopy(base)
    tokenizer.chat_template = OFFICIAL[family]
    bos, eos = SPECIAL[family]
    tokenizer.add_special_tokens({"bos_token": bos, "eos_token": eos})
    return tokenizer


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_modelfile_template_renders_the_conversation_like_the_tokenizer(base_tokenizer, family):
    tokenizer = family_tokenizer(base_tokenizer, family)
    assert detect_family(tokenizer) == family
    conversation = CONVERSATION if family != "mistral" else CONVERSATION[1:]  # Mistral v0.2 refuses a system role
    for turns in range(2, len(conversation) + 1):  # every prefix ending on a user turn: the generation prompt
        messages = conversation[:turns]
        if messages[-1]["role"] != "user":
            continue
        expected = jinja_render(tokenizer, messages)
        assert ollama_render(FAMILIES[family].go_template, messages) == expected
    full = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert full.startswith(SPECIAL[family][0]) or family == "chatml"  # the BOS that llama.cpp adds itself


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
    tokenizer.chat_template = OFFICIAL["llama3"].replace(
        "message['content'] | trim", "(('Cutting Knowledge Date: December 2023\\n\\n' if message['role'] == 'system' else '') + message['content']) | trim")
    with pytest.raises(ChatTemplateError, match=r"llama3 Modelfile template renders a conversation differently .* at character \d+"):
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
    assert render("{{ range .Missing }}x{{ else }}empty{{ end }}", {"Missing": []}) == "empty"
    assert render("{{ not .System }} {{ $.System }}|", data) == "true |"
    for bad in ("{{ if .System }}x", "{{ end }}", "{{ with .System }}x{{ end }}", "{{ printf \"%s\" .System }}",
                "{{ $undeclared = 1 }}", "{{ .Nope }}"):
        with pytest.raises(TemplateError):
            render(bad, data)
