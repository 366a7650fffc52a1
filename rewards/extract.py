"""Pull the final answer (or a tagged section) out of a model's completion.

Every extractor takes plain text and returns the answer as a stripped string,
or None when the text holds no answer of that kind. None is never "", so
callers can tell "no answer" from "answered with nothing" (an empty
`<answer></answer>` gives None too: there is nothing to grade).

    extract_xml_answer   <answer> 42 </answer>           the lab's GRPO format (SYSTEM_PROMPT)
    extract_hash_answer  ... #### 42                      GSM8K gold solutions
    extract_boxed        \\boxed{\\frac{3}{4}}            LaTeX, nested braces allowed
    extract_answer_is    The answer is 42. / 答案是 42      plain-language statements
    extract_last_number  ... so she has 1,250 left.       the last number, as a last resort
    extract_answer       the first of the above that finds something, in a chosen order

When a text holds several answers of one kind, the *last* one wins: models
restate, correct themselves, and finish with their final say.

The helpers `completion_text` and `prompt_text` turn TRL's two input forms
(plain strings, or chat-message lists) into the text the rewards look at.
"""

import re

ANSWER_TAG = "answer"
REASONING_TAG = "reasoning"

_HASH = re.compile(r"####\s*([^\n]*)")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
# "The answer is 42", "final answer: 42", "答案是 42", "答案为42", "答案：42", "最终答案是 42".
_ANSWER_IS = re.compile(
    r"(?:\banswer\s*(?:is\b|=|:)|答案\s*(?:是|为|為|:|：))\s*[:：]?\s*([^\n]*)",
    re.IGNORECASE,
)
# A number as people write it: optional sign and currency sign ("-$5"), thousands
# separators, decimals, a simple fraction. rewards.numeric parses what this finds.
# Not preceded by a Latin letter, digit or point ("x2", "v1.5" are names, not numbers);
# a CJK character may touch it ("共42个", "答案是42元": Chinese has no spaces).
NUMBER_PATTERN = r"(?<![A-Za-z0-9_.])[-−+]?[$€£¥₹]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|\.\d+)"
_NUMBER = re.compile(NUMBER_PATTERN)
# Sentence-ending punctuation after an "answer is" phrase (ASCII and CJK).
_TRAILING_PUNCTUATION = " \t.,;:!?。，；：！？)）]】*"
# Where the sentence after an "answer is" phrase ends: CJK stops, "!?;", or a point that
# is not a decimal point ("42. Check: 6*7=42" ends after "42"; "4.5" does not end).
_SENTENCE_END = re.compile(r"[。！？；!?;]|\.(?!\d)")


def content_text(content) -> str:
    """A message's content as text: a string, or a list of parts whose text parts are joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal form: [{"type": "text", "text": "..."}, {"type": "image"}]
        return "".join(content_text(part.get("text")) for part in content if isinstance(part, dict))
    return str(content)


def completion_text(completion) -> str:
    """The text a reward grades: a plain string, or the assistant turns of a chat completion."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return content_text(completion.get("content"))
    if isinstance(completion, list):
        # TRL's conversational completions are [{"role": "assistant", "content": ...}];
        # with tools there may be several assistant turns, and the final answer is in the last.
        assistant = [m for m in completion if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]
        return "\n".join(content_text(m.get("content")) for m in assistant)
    return "" if completion is None else str(completion)


def prompt_text(prompt) -> str:
    """The user's words in a prompt: a plain string, or the last user message of a chat prompt.

    The system message is left out on purpose: it is the lab's instruction, not
    the user's question (e.g. an English SYSTEM_PROMPT above a Chinese question).
    """
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        if users:
            return content_text(users[-1].get("content"))
        return "\n".join(content_text(m.get("content")) for m in prompt if isinstance(m, dict))
    return "" if prompt is None else str(prompt)


def tag_pattern(tag: str) -> str:
    """A regex for one complete <tag>...</tag> block, capturing its body.

    The body may not contain another opening tag, so nested blocks give the
    innermost one: "<answer><answer>5</answer></answer>" -> "5", not "<answer>5".
    (The re module caches compiled patterns, so building the string per call is cheap.)
    """
    t = re.escape(tag)
    return rf"<{t}>((?:(?!<{t}>).)*?)</{t}>"


def extract_xml_tag(text: str, tag: str) -> str | None:
    """The stripped body of the last complete <tag>...</tag> block, or None."""
    matches = re.findall(tag_pattern(tag), text or "", re.DOTALL | re.IGNORECASE)
    if not matches:
        return None
    body = matches[-1].strip()
    return body or None


def extract_xml_answer(text: str) -> str | None:
    """The body of the last <answer>...</answer>; an unclosed tag (truncated generation) is None."""
    return extract_xml_tag(text, ANSWER_TAG)


def extract_hash_answer(text: str) -> str | None:
    """What follows the last '####' on its line (GSM8K's gold format)."""
    matches = _HASH.findall(text or "")
    if not matches:
        return None
    body = matches[-1].strip()
    return body or None


def _closing_braces(text: str) -> dict:
    """Position of each "{" -> position of the "}" that closes it (unclosed ones are left out).

    One pass with a stack, so a text full of unclosed boxes ("\\boxed{" 20,000 times)
    costs one scan, not one scan per box.
    """
    closing, open_at = {}, []
    for brace in re.finditer(r"[{}]", text):
        if brace.group() == "{":
            open_at.append(brace.start())
        elif open_at:
            closing[open_at.pop()] = brace.start()
    return closing


def extract_boxed(text: str) -> str | None:
    """The body of the last \\boxed{...} (or \\fbox{...}), nested braces included."""
    text = text or ""
    boxes = list(_BOXED.finditer(text))
    if not boxes:
        return None
    closing = _closing_braces(text)
    for match in reversed(boxes):
        brace = match.end() - 1
        if brace in closing:
            body = text[match.end():closing[brace]].strip()
            if body:
                return body
    return None  # every box is unclosed or empty


def extract_answer_is(text: str) -> str | None:
    """The answer after the last "the answer is" / "answer:" / "答案是" phrase.

    Reads the rest of that sentence (up to a full stop or the end of the line):
    the number it states when it holds one ("The answer is 42 apples." -> "42"),
    else the words without closing punctuation ("The answer is Paris." -> "Paris").
    A sentence that names several different numbers is returned whole
    ("The answer is 41 or 42" -> "41 or 42"), so a hedge grades as no single answer.
    """
    matches = _ANSWER_IS.findall(text or "")
    if not matches:
        return None
    sentence = _SENTENCE_END.split(matches[-1], maxsplit=1)[0]
    numbers = set(_NUMBER.findall(sentence))
    if len(numbers) == 1:
        return numbers.pop()
    sentence = sentence.strip().rstrip(_TRAILING_PUNCTUATION).strip()
    return sentence or None


def extract_last_number(text: str) -> str | None:
    """The last number in the text, as written ("1,250", "-3", "0.5", "3/4"), or None."""
    matches = _NUMBER.findall(text or "")
    return matches[-1] if matches else None


EXTRACTORS = {
    "xml": extract_xml_answer,
    "boxed": extract_boxed,
    "hash": extract_hash_answer,
    "answer_is": extract_answer_is,
    "last_number": extract_last_number,
}
# The order `extract_answer` tries by default: explicit markers before guesses.
DEFAULT_ORDER = ("xml", "boxed", "hash", "answer_is", "last_number")


def extract_answer(text: str, order=DEFAULT_ORDER) -> str | None:
    """The first answer found by the extractors named in `order` (see EXTRACTORS)."""
    for name in order:
        if name not in EXTRACTORS:
            raise ValueError(f"unknown extractor '{name}'; choose from {', '.join(EXTRACTORS)}")
        found = EXTRACTORS[name](text)
        if found is not None:
            return found
    return None
