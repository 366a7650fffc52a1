"""One decoder for every text file the lab reads: BOM, UTF-8, UTF-16, GB18030 (GBK), Big5.

Chinese training data (and configs saved by Windows Notepad) arrive in whatever encoding the exporter used (AutoDL users
meet GBK CSVs, Big5 forum dumps, UTF-16 files saved by Excel), and a hard-coded
`encoding="utf-8"` gives a UnicodeDecodeError on some files and silent mojibake on
others. Every text loader (alpaca / messages / ShareGPT JSON and JSONL, preference
pairs, GSM8K, the medical CSV and paired-lines files) and the YAML configs (core.config) read through here:

    text, encoding = read_text(path)                 # detect
    text, encoding = read_text(path, "gbk")          # force one, decoded strictly
    text, encoding, scores = decode_file(path)       # also the plausibility of each candidate

Bad input is one DataError line naming the file (lab_utils.core.errors).

Encoding choice (an explicit `encoding=` skips all of this and is decoded strictly):
  1. A byte-order mark decides: EF BB BF -> utf-8-sig, FF FE / FE FF -> utf-16.
  2. Strict UTF-8. Non-ASCII bytes form valid UTF-8 almost never by accident,
     so a strict UTF-8 decode is accepted as it is (pure ASCII is valid in every
     candidate and is called utf-8).
  3. The legacy Chinese codecs, GB18030 (a superset of GBK and GB2312) then Big5.
     GB18030 decodes almost any byte string, and Big5 text also decodes as
     GB18030 (as nonsense), so a strict decode is not enough: each decoded
     text gets a plausibility score (`plausibility`) and the best one at or
     above MIN_PLAUSIBILITY wins; on a tie, the earlier codec in that order.
  4. Nothing fits: one DataError naming the file, the candidate that got
     furthest, and the byte offset where it failed.

Plausibility (0..1) = cleanliness x commonness, on the first SCORE_CHARS characters:
  cleanliness  1 - 20 x (share of characters that never occur in clean text:
               U+FFFD, control characters other than tab/CR/LF, private-use
               code points, a stray BOM); 5 % such characters -> 0.
  commonness   among the "script" characters (CJK ideographs, kana, hangul,
               Greek, Cyrillic, box drawing), the share that are common Chinese
               characters: GB2312 level 1 (the 3,755 everyday simplified ones)
               or Big5 level 1 (the 5,401 everyday traditional ones), whichever
               share is higher (real text is written in one script; mojibake
               mixes rare characters, kana and box drawing). 1.0 when the text
               holds no such characters. Punctuation and Latin text are neutral.
Measured: real Chinese text (the bundled samples, simplified and traditional,
and the GBK medical file) scores 0.94-0.95. Big5 text read as GB18030 scores 0:
many of its bytes land in GB18030's private-use areas, and even without them
only about 35 % of its characters are common. Shift-JIS read as GB18030: 0.08.

Before decoding, `check_not_binary` refuses files people pick by mistake (images,
zip/xlsx, PDF, gzip, old Office files, NUL bytes) and empty files, each with one line.
"""

import unicodedata
from pathlib import Path

from lab_utils.core.errors import data_error

ENCODING_ORDER = ("utf-8", "utf-8-sig", "utf-16", "gb18030", "big5")  # the documented order
LEGACY_ENCODINGS = ("gb18030", "big5")  # decode almost anything: need a plausibility check
BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
MIN_PLAUSIBILITY = 0.6
SCORE_CHARS = 200_000  # enough to judge a file; keeps scoring a big file fast

# Magic numbers of files people pick by mistake: one clear line instead of a decode error.
BINARY_SIGNATURES = (
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a zip archive (xlsx files are zips too: export it as CSV)"),
    (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip archive"), (b"\xd0\xcf\x11\xe0", "an old Excel/Office file"),
)


def read_text(path, encoding: str | None = None, expected: str = "a text file") -> tuple[str, str]:
    """(text, encoding name) of a text file in any supported encoding; DataError (one line) otherwise.

    `expected` names what the caller reads ("a CSV text file", "JSON lines"), for the error messages.
    """
    text, encoding, _ = decode_file(path, encoding, expected)
    return text, encoding


def decode_file(path, encoding: str | None = None, expected: str = "a text file") -> tuple[str, str, dict]:
    """read_text plus the scores: candidate encoding -> plausibility, or why it failed to decode."""
    raw = Path(path).read_bytes()
    check_not_binary(raw, path, encoding, expected)
    return decode_bytes(raw, path, encoding)


def _legacy_chars(encoding: str, first: int, last: int) -> frozenset:
    """The characters a double-byte codec stores at codes first..last (lead byte, trail byte)."""
    chars = set()
    for code in range(first, last + 1):
        try:
            chars.add(code.to_bytes(2, "big").decode(encoding))
        except UnicodeDecodeError:  # unassigned code
            pass
    return frozenset(chars)


# GB2312 level 1 (everyday simplified): 0xB0A1-0xD7F9. Big5 frequently used (traditional): 0xA440-0xC67E.
GB2312_LEVEL1 = _legacy_chars("gb2312", 0xB0A1, 0xD7F9)
BIG5_LEVEL1 = _legacy_chars("big5", 0xA440, 0xC67E)


def _is_bad_char(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    category = unicodedata.category(ch)
    return ch in "\ufffd\ufeff" or category in ("Cc", "Co", "Cs")


def _is_script_char(ch: str) -> bool:
    code = ord(ch)
    return (0x2E80 <= code <= 0x9FFF or 0xAC00 <= code <= 0xD7AF or 0xF900 <= code <= 0xFAFF
            or 0x370 <= code <= 0x4FF or 0x2500 <= code <= 0x257F or code >= 0x20000)


def plausibility(text: str) -> float:
    """How much `text` looks like real (Chinese or plain) text, 0..1; see the module docstring."""
    sample = text[:SCORE_CHARS]
    if not sample:
        return 0.0
    bad = sum(_is_bad_char(ch) for ch in sample)
    cleanliness = max(0.0, 1.0 - 20.0 * bad / len(sample))
    script = [ch for ch in sample if _is_script_char(ch)]
    if not script:
        return cleanliness
    common_simplified = sum(ch in GB2312_LEVEL1 for ch in script)
    common_traditional = sum(ch in BIG5_LEVEL1 for ch in script)
    return cleanliness * max(common_simplified, common_traditional) / len(script)


def _decode_error(exc: UnicodeDecodeError) -> str:
    return f"invalid byte 0x{exc.object[exc.start]:02X} at byte offset {exc.start}"


def decode_bytes(raw: bytes, path, encoding: str | None = None) -> tuple[str, str, dict]:
    """Decode a file's bytes: returns (text, encoding, scores). See the module docstring."""
    if encoding:
        try:
            return raw.decode(encoding), encoding, {}
        except UnicodeDecodeError as exc:
            raise data_error(path, f"not valid {encoding}: {_decode_error(exc)}; "
                                   f"leave encoding unset to detect it") from None
        except LookupError:
            raise data_error(path, f"unknown encoding '{encoding}'") from None
    for bom, name in BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(name), name, {name: 1.0}
            except UnicodeDecodeError as exc:
                raise data_error(path, f"starts with a {name} byte-order mark but is not valid {name}: "
                                       f"{_decode_error(exc)}") from None
    scores, failures = {}, {}
    try:
        return raw.decode("utf-8"), "utf-8", {"utf-8": 1.0}
    except UnicodeDecodeError as exc:
        failures["utf-8"], scores["utf-8"] = exc, _decode_error(exc)
    decoded = {}
    for name in LEGACY_ENCODINGS:
        try:
            decoded[name] = raw.decode(name)
            scores[name] = round(plausibility(decoded[name]), 3)
        except UnicodeDecodeError as exc:
            failures[name], scores[name] = exc, _decode_error(exc)
    fitting = [name for name in decoded if scores[name] >= MIN_PLAUSIBILITY]
    if fitting:
        best = max(fitting, key=lambda name: scores[name])  # max keeps the first on a tie
        return decoded[best], best, scores
    raise data_error(path, _no_encoding_message(failures, decoded, scores))


def _no_encoding_message(failures: dict, decoded: dict, scores: dict) -> str:
    parts = []
    if failures:
        furthest = max(failures, key=lambda name: failures[name].start)  # the most plausible failure
        parts.append(f"closest candidate {furthest} fails with {_decode_error(failures[furthest])}")
    parts += [f"{name} decodes but does not look like text (plausibility {scores[name]:.2f} < {MIN_PLAUSIBILITY})"
              for name in decoded]
    return ("could not detect the encoding (tried " + ", ".join(ENCODING_ORDER) + "): " + "; ".join(parts)
            + "; pass encoding= if you know it")


def check_not_binary(raw: bytes, path, encoding: str | None = None, expected: str = "a text file") -> None:
    """One DataError line for an empty file or one that is clearly not text."""
    for signature, what in BINARY_SIGNATURES:
        if raw.startswith(signature):
            raise data_error(path, f"this is {what}, not {expected}")
    if not raw.strip():
        raise data_error(path, f"the file is empty; expected {expected}")
    if b"\x00" in raw and not encoding and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        offset = raw.index(b"\x00")
        raise data_error(path, f"holds NUL bytes (first at byte offset {offset}): a binary file, "
                               f"or UTF-16 without a byte-order mark (pass encoding='utf-16-le')")
