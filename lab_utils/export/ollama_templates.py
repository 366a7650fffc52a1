"""The chat-template families the lab trains, as Ollama (Go text/template) templates, and how to pick one.

A Modelfile needs the model's chat format as a Go template; the tokenizer only has
it as Jinja. For each family the lab trains, FAMILIES holds a Go template written to
render a conversation exactly like the family's official Jinja template (minus the
BOS token, which llama.cpp adds when it tokenizes), and the stop tokens:

    chatml          Qwen 1.5/2/2.5, Qwen3-VL, SmolLM2  <|im_start|>role\\n...<|im_end|>\\n
    qwen3           Qwen3 (ChatML + the thinking switch: Ollama's `think: false` writes the
                    empty <think></think> block the Jinja template writes for enable_thinking=False)
    llama3          Llama 3 / 3.x Instruct   <|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>
    gemma           Gemma 2 / 3 instruct     <start_of_turn>user|model\\n...<end_of_turn>\\n, a system
                                             message goes in front of the first user turn (Gemma 3)
    mistral         Mistral-7B-Instruct v0.1/v0.2 (tokenizer v1):  [INST] ... [/INST] answer</s>,
                    a system message in front of the FIRST user turn
    mistral-v3      Mistral-7B-Instruct v0.3 (tokenizer v3): [INST] ...[/INST] answer</s>, a system
                    message in front of the LAST user turn
    mistral-legacy  the original v0.2 template many fine-tunes still ship: [INST] ... [/INST]answer</s>

The family is chosen from the tokenizer: every family whose marker strings its Jinja
template contains is a candidate, and the candidate is checked: probe conversations
are rendered through the tokenizer's template and through the Go template
(lab_utils.export.go_template); the first candidate that renders them identically wins,
and if none does, the first difference is the error, since a Modelfile that formats
turns differently from training makes Ollama answer worse without saying so. (Llama
3.1+ tokenizers, whose template adds a "Cutting Knowledge Date / Today Date" system
preamble, fail that check: pass your own template.) An unknown family, or a failed
check, is one error that says how to pass a template: the export's `template` option,
a family name or a file holding an Ollama Go template. tests/test_chat_templates.py
checks every family against the model makers' own template files (tests/data/templates/).

Ollama puts the Modelfile's SYSTEM into .Messages as the first message when a
request has none, so ranging over .Messages reproduces the Jinja rendering message
by message.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from lab_utils.export.go_template import TemplateError, render
from lab_utils.models.chat import ChatTemplateError  # the one class for every chat-template problem


@dataclass(frozen=True)
class Family:
    markers: tuple  # strings the family's Jinja template contains (all of them)
    go_template: str
    stops: tuple


CHATML_TURNS = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
MISTRAL_STOPS = ("[INST]", "[/INST]", "</s>")
FAMILIES = {
    "qwen3": Family(("<|im_start|>", "enable_thinking"), CHATML_TURNS + """{{ if and .IsThinkSet (not .Think) }}<think>

</think>

{{ end }}""", ("<|im_end|>", "<|im_start|>")),
    "chatml": Family(("<|im_start|>",), CHATML_TURNS, ("<|im_end|>", "<|im_start|>")),
    "llama3": Family(("<|start_header_id|>",), """{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>

""", ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>")),
    "gemma": Family(("<start_of_turn>",), """{{- $system := "" }}
{{- range .Messages }}
{{- if eq .Role "system" }}{{ $system = .Content }}
{{- else }}<start_of_turn>{{ if eq .Role "assistant" }}model{{ else }}{{ .Role }}{{ end }}
{{ if $system }}{{ $system }}

{{ $system = "" }}{{ end }}{{ .Content }}<end_of_turn>
{{ end }}
{{- end }}<start_of_turn>model
""", ("<end_of_turn>", "<start_of_turn>")),
    # tests/data/templates/mistral-v1.jinja:
    #   ' [INST] ' + (system + '\n\n' on the first turn) + user + ' [/INST]', ' ' + answer + eos
    "mistral": Family(("[INST]",), """{{- $system := "" }}
{{- range .Messages }}
{{- if eq .Role "system" }}{{ $system = .Content }}
{{- else if eq .Role "user" }} [INST] {{ if $system }}{{ $system }}

{{ $system = "" }}{{ end }}{{ .Content }} [/INST]
{{- else }} {{ .Content }}</s>
{{- end }}
{{- end }}""", MISTRAL_STOPS),
    # tests/data/templates/mistral-v3.jinja:
    #   '[INST] ' + (system + '\n\n' on the LAST turn) + user + '[/INST]', ' ' + answer + eos
    # (the Jinja template also trims the answer; Go templates have no trim, so answers are written as given)
    "mistral-v3": Family(("[INST]",), """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}[INST] {{ if and $last $.System }}{{ $.System }}

{{ end }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }} {{ .Content }}</s>
{{- end }}
{{- end }}""", MISTRAL_STOPS),
    # tests/data/templates/mistral-v0.2-legacy.jinja (refuses a system role; Ollama's SYSTEM goes in
    # front of the first turn)
    "mistral-legacy": Family(("[INST]",), """{{- $system := "" }}
{{- range .Messages }}
{{- if eq .Role "system" }}{{ $system = .Content }}
{{- else if eq .Role "user" }}[INST] {{ if $system }}{{ $system }}

{{ $system = "" }}{{ end }}{{ .Content }} [/INST]
{{- else }}{{ .Content }}</s>
{{- end }}
{{- end }}""", MISTRAL_STOPS),
}

# Probe conversations: with a system message, and without (templates that refuse one: Gemma 2, Mistral v0.1).
PROBES = (
    [{"role": "system", "content": "SYS"}, {"role": "user", "content": "U1"},
     {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}],
    [{"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}],
)
TEMPLATE_HINT = ("pass template= (export Params `template`): a family name (" + ", ".join(FAMILIES)
                 + ") or a file holding an Ollama Go template")


def template_text(tokenizer) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates: the default one formats chats
        template = template.get("default") or next(iter(template.values()))
    return template or ""


def candidate_families(tokenizer) -> list[str]:
    """Families whose markers the tokenizer's template contains, the most specific (most markers) first."""
    template = template_text(tokenizer)
    if not template:
        raise ChatTemplateError("the tokenizer has no chat template; an Ollama Modelfile needs one to know how "
                                f"turns look: {TEMPLATE_HINT}")
    found = [name for name, family in FAMILIES.items() if all(m in template for m in family.markers)]
    return sorted(found, key=lambda name: -len(FAMILIES[name].markers))


def detect_family(tokenizer) -> str:
    """The first candidate family that renders the probes exactly like the tokenizer; ChatTemplateError otherwise."""
    found = candidate_families(tokenizer)
    if not found:
        head = jinja_render(tokenizer, PROBES[1])[:100].replace("\n", "\\n")
        raise ChatTemplateError(f"unknown chat template family (known: {', '.join(FAMILIES)}); it renders a "
                                f"conversation as {head!r}; {TEMPLATE_HINT}")
    errors = []
    for name in found:
        try:
            check_same_rendering(tokenizer, FAMILIES[name].go_template, name)
            return name
        except ChatTemplateError as err:
            errors.append(err)
    raise errors[0]


def jinja_render(tokenizer, messages, **template_kwargs) -> str:
    """The tokenizer's own rendering with the generation prompt, without the BOS llama.cpp adds itself."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **template_kwargs)
    bos = getattr(tokenizer, "bos_token", None)
    # Only a template that writes {{ bos_token }} itself has one to drop (SmolLM2's GGUF names
    # <|im_start|> as BOS, which its ChatML template writes as text, not as a BOS).
    writes_bos = "bos_token" in str(tokenizer.chat_template)
    return text[len(bos):] if writes_bos and bos and text.startswith(bos) else text


def ollama_render(go_template: str, messages, think: bool | None = None) -> str:
    """What Ollama sends the model for these messages (the template over .Messages); think=None is a
    request without `think`, True/False one with it (Ollama's .IsThinkSet and .Think)."""
    data = {"Messages": [{"Role": m["role"], "Content": m["content"], "ToolCalls": [], "Thinking": "", "Images": []}
                         for m in messages],
            "System": "\n\n".join(m["content"] for m in messages if m["role"] == "system"),
            "Tools": [], "Response": "", "Think": bool(think), "IsThinkSet": think is not None, "ThinkLevel": ""}
    return render(go_template, data)


def first_difference(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def check_same_rendering(tokenizer, go_template: str, family: str) -> None:
    """Render the probe conversations both ways; ChatTemplateError at the first difference."""
    from jinja2 import TemplateError as JinjaError

    # a template with the thinking switch is checked with it off too (Ollama's `think: false`)
    switches = (None, False) if "enable_thinking" in template_text(tokenizer) else (None,)
    for messages in PROBES:
        try:
            expected = [jinja_render(tokenizer, messages, **({} if s is None else {"enable_thinking": s}))
                        for s in switches]
        except JinjaError:
            continue  # this template refuses the probe (e.g. no system role): try the next one
        for think, want in zip(switches, expected):
            got = ollama_render(go_template, messages, think=think)
            if got != want:
                at = first_difference(got, want)
                raise ChatTemplateError(
                    f"the {family} Modelfile template renders a conversation differently from the tokenizer's own "
                    f"template at character {at}: tokenizer {want[max(0, at - 20):at + 40]!r}, "
                    f"Modelfile {got[max(0, at - 20):at + 40]!r}; {TEMPLATE_HINT}")
        return
    raise ChatTemplateError(f"the tokenizer's chat template renders none of the probe conversations; {TEMPLATE_HINT}")


def choose_template(tokenizer, template: str = "") -> tuple[str, str, tuple]:
    """(family name or 'custom', Go template, stop tokens) for the Modelfile.

    template: "" detects the family from the tokenizer and checks it renders the same;
    a family name forces that family (no check); anything else is a file with a Go template.
    """
    if not template:
        family = detect_family(tokenizer)  # checked: it renders the probes like the tokenizer
        return family, FAMILIES[family].go_template, FAMILIES[family].stops
    if template in FAMILIES:
        return template, FAMILIES[template].go_template, FAMILIES[template].stops
    path = Path(template).expanduser()
    if not path.is_file():
        raise ChatTemplateError(f"template={template!r} is neither a family ({', '.join(FAMILIES)}) nor a file")
    text = path.read_text(encoding="utf-8")
    try:
        ollama_render(text, PROBES[0])
    except TemplateError as err:  # a template Ollama would render but this subset cannot is still accepted
        print(f"[export] note: cannot preview {path.name} ({err}); writing it as given", flush=True)
    return "custom", text, ()


def default_system_prompt(tokenizer, family: str) -> str | None:
    """The system prompt the Jinja template inserts when a conversation has none (SmolLM2, Qwen do)."""
    if family not in ("chatml", "qwen3"):
        return None
    rendered = jinja_render(tokenizer, [{"role": "user", "content": "U1"}])
    found = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", rendered, flags=re.S)
    return found.group(1) if found else None
