"""Read numbers the way people (and models) write them, and compare them.

`parse_number` turns an answer string into an exact `fractions.Fraction`, or
None when the string is not one number. What it accepts:

    "72"  "-3"  "+4"  "5.0"  ".5"        plain integers and decimals (5.0 == 5)
    "1,200"  "1,234,567.5"               thousands separators (groups of three only:
                                         "1,5" is ambiguous and gives None)
    "$1,200"  "-$5"  "€3"  "¥20"         a currency sign before the number
    "50%"                                 the percent sign is dropped: 50% -> 50, because
                                         GSM8K-style answers state the percentage itself
    "3/4"  "\\frac{3}{4}"  "\\dfrac34"   simple fractions (a zero denominator gives None)
    "18 dollars."  "42个"  "7 km/h"       trailing units and punctuation, as long as
                                         they hold no further digit ("3 or 4" gives None)
    "**42**"  "$42$"  "\\(42\\)"  "１２"   markdown bold, LaTeX math delimiters, full-width digits

A string with more than MAX_DIGITS digits in its number is not a number
anyone means as an answer (and Python refuses to convert more than 4300
digits): it parses as None, so a degenerate completion (a run of 100,000
digits) scores 0 instead of raising inside a GRPO step.

`numbers_in` lists every number written in a longer text, for readers that
accept "She has 42 apples." as the answer 42 (see rewards.correctness).

`normalise_number` gives one canonical spelling ("1,200.0" -> "1200",
"0.50" -> "0.5", "2/6" -> "1/3"), used for gold answers and exact matching.
`numbers_equal` compares two answer strings exactly (as fractions) or within
a tolerance (for answers that went through floating point, e.g. "0.3333333");
`values_close` does the same for parsed values, in exact arithmetic (no float
overflow, whatever the size).
"""

import math
import re
import unicodedata
from fractions import Fraction

from rewards.extract import NUMBER_PATTERN

CURRENCY_SIGNS = "$€£¥₹₩"
# Longer digit strings are degenerate output, not answers (GSM8K's longest answer has 9 digits).
MAX_DIGITS = 100
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}|\\[dt]?frac\s*(\d)\s*(\d)")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_LEADING = re.compile(rf"^\s*(?:[A-Za-z]\s*=|≈|~|=)?\s*([-+])?\s*[{re.escape(CURRENCY_SIGNS)}]?\s*([-+])?\s*")
_NUMBER = re.compile(r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:\s*/\s*(\d+(?:\.\d+)?))?")


def _clean(text: str) -> str:
    """Undo the wrappers models put around numbers: LaTeX, markdown, full-width forms."""
    s = unicodedata.normalize("NFKC", text)  # full-width digits, ％, ＄ -> ASCII
    s = s.replace("−", "-").replace("–", "-")  # unicode minus and en dash as a sign
    s = _LATEX_FRAC.sub(lambda m: f"{m.group(1) or m.group(3)}/{m.group(2) or m.group(4)}", s)
    s = _LATEX_TEXT.sub(r" \1", s)
    s = s.replace("{,}", ",").replace("\\!", "").replace("\\,", "").replace("\\%", "%").replace("\\$", "$")
    s = s.replace("\\(", "").replace("\\)", "").replace("\\[", "").replace("\\]", "")
    s = s.replace("**", "").replace("`", "")
    # "$42$" is LaTeX math, not dollars; a lone leading "$" stays as a currency sign.
    if s.count("$") >= 2:
        s = s.replace("$", "")
    return s.strip()


def parse_number(text) -> Fraction | None:
    """The one number a string states, exactly, or None (see the module docstring)."""
    if text is None:
        return None
    if isinstance(text, (int, Fraction)) and not isinstance(text, bool):
        return Fraction(text)
    if isinstance(text, float):
        return Fraction(text).limit_denominator(10**9) if math.isfinite(text) else None
    s = _clean(str(text))
    lead = _LEADING.match(s)
    signs = (lead.group(1) or "") + (lead.group(2) or "")
    if len(signs) > 1:
        return None  # "-$-5": not a number anyone means
    number = _NUMBER.match(s, lead.end())
    if not number:
        return None
    if re.search(r"\d", s[number.end():]):
        return None  # a second number after the first: "3 or 4", "2 hours 30 minutes"
    digits = sum(c.isdigit() for c in number.group(0))
    if digits > MAX_DIGITS:
        return None
    try:
        value = Fraction(number.group(1).replace(",", ""))
        denominator = Fraction(number.group(2)) if number.group(2) is not None else Fraction(1)
    except ValueError:  # a digit character Fraction does not read (some scripts' digits are \d but not decimal)
        return None
    if denominator == 0:
        return None
    value /= denominator
    return -value if signs == "-" else value


def numbers_in(text) -> list[Fraction]:
    """The value of every number written in a text, in order ("3 apples at $1,200" -> [3, 1200]).

    LaTeX, markdown and full-width forms are undone first (see parse_number);
    a number too long to be an answer (MAX_DIGITS) is left out.
    """
    values = (parse_number(m) for m in re.findall(NUMBER_PATTERN, _clean(str(text or ""))))
    return [v for v in values if v is not None]


def format_number(value: Fraction) -> str:
    """Canonical spelling: integers bare, terminating decimals without trailing zeros, else p/q."""
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d != 1:
        return f"{value.numerator}/{value.denominator}"  # 1/3 has no finite decimal
    digits = 0
    while (value * 10**digits).denominator != 1:
        digits += 1
    scaled = str(abs(value * 10**digits).numerator).rjust(digits + 1, "0")  # exact, no float rounding
    sign = "-" if value < 0 else ""
    return f"{sign}{scaled[:-digits]}.{scaled[-digits:]}"


def normalise_number(text) -> str | None:
    """The canonical spelling of the number `text` states ("1,200.00" -> "1200"), or None."""
    value = parse_number(text)
    return None if value is None else format_number(value)


def numbers_equal(a, b, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """True when both strings state a number and the numbers agree.

    Exact as fractions first ("3/4" == "0.75", "5.0" == "5"), then within
    `rel_tol` / `abs_tol` (math.isclose) for answers that went through floats.
    """
    return values_close(parse_number(a), parse_number(b), rel_tol=rel_tol, abs_tol=abs_tol)


def values_close(x: Fraction | None, y: Fraction | None, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """x == y, or |x - y| <= max(rel_tol * max(|x|, |y|), abs_tol) as math.isclose says, in exact
    arithmetic (float(x) overflows for numbers past 1e308, which a model can write); None is never close."""
    if x is None or y is None:
        return False
    if x == y:
        return True
    return abs(x - y) <= max(Fraction(rel_tol) * max(abs(x), abs(y)), Fraction(abs_tol))


def is_integer_text(text) -> bool:
    """True when the string states a whole number ("42", "1,200", "5.0", "$7")."""
    value = parse_number(text)
    return value is not None and value.denominator == 1
