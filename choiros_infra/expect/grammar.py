"""The statement grammar's shared pieces: tokens, clauses, refusals, and the clause forms
several subject kinds use. Each kind (``choiros_infra/expect/kinds/``) builds its clause
table from these; ``parse`` splits a line and hands the subject's tokens and the clauses to
the kind named by the first word.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from choiros_infra.expect.model import TextMatch

TEXT_FORMS = ('[not] contains "TEXT"', "[not] matches /REGEX/")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}


class Reject(Exception):
    """A statement the grammar refuses: what is wrong and what it accepts there."""

    def __init__(self, problem: str, expected: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.expected = expected


# --- tokens ------------------------------------------------------------------------------------


TokenKind = Literal["word", "string", "regex", "colon", "comma"]


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    value: str
    start: int
    end: int


def scan_string(line: str, start: int) -> tuple[str, int]:
    out: list[str] = []
    i = start + 1
    while i < len(line):
        char = line[i]
        if char == "\\":
            escape = line[i + 1] if i + 1 < len(line) else ""
            if escape not in _ESCAPES:
                raise Reject(f"unknown escape '\\{escape}' in a string",
                              'one of \\" \\\\ \\n \\t inside "..."')
            out.append(_ESCAPES[escape])
            i += 2
        elif char == '"':
            return "".join(out), i + 1
        else:
            out.append(char)
            i += 1
    raise Reject("unterminated string", 'a closing " on the same line')


def scan_regex(line: str, start: int) -> tuple[str, int]:
    out: list[str] = []
    i = start + 1
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line):
            out.append("/" if line[i + 1] == "/" else line[i:i + 2])
            i += 2
        elif line[i] == "/":
            return "".join(out), i + 1
        else:
            out.append(line[i])
            i += 1
    raise Reject("unterminated regex", "a closing / (write \\/ for a slash inside it)")


def tokenize(line: str) -> list[Token]:
    """Words, "strings", /regexes/ (only right after ``matches``), the first ``:`` that ends a
    word (the subject's end), and commas. ``#`` where a token would start begins a comment."""
    tokens: list[Token] = []
    seen_colon = False
    i = 0

    def subject_colon(at: int) -> bool:
        return (not seen_colon and line[at] == ":"
                and (at + 1 == len(line) or line[at + 1].isspace()))

    while i < len(line):
        char = line[i]
        if char.isspace():
            i += 1
        elif char == "#":
            break
        elif char == ",":
            tokens.append(Token("comma", ",", i, i + 1))
            i += 1
        elif subject_colon(i):
            tokens.append(Token("colon", ":", i, i + 1))
            seen_colon = True
            i += 1
        elif char == '"':
            value, end = scan_string(line, i)
            tokens.append(Token("string", value, i, end))
            i = end
        elif char == "/" and tokens and tokens[-1].kind == "word" and (
                tokens[-1].value == "matches"):
            value, end = scan_regex(line, i)
            tokens.append(Token("regex", value, i, end))
            i = end
        else:
            start = i
            while (i < len(line) and not line[i].isspace() and line[i] not in ',"'
                   and not subject_colon(i)):
                i += 1
            tokens.append(Token("word", line[start:i], start, i))
    return tokens


# --- clauses -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clause:
    tokens: tuple[Token, ...]
    text: str

    def words(self, *words: str) -> bool:
        """The clause is exactly these bare words."""
        return len(self.tokens) == len(words) and all(
            t.kind == "word" and t.value == w for t, w in zip(self.tokens, words, strict=True))

    def starts(self, *words: str) -> bool:
        return len(self.tokens) >= len(words) and all(
            t.kind == "word" and t.value == w for t, w in zip(self.tokens, words, strict=False))

    def after(self, count: int) -> tuple[Token, ...]:
        return self.tokens[count:]


T = TypeVar("T")


def one_value(tokens: Sequence[Token], what: str) -> str:
    """Exactly one word or quoted string."""
    if len(tokens) != 1 or tokens[0].kind not in ("word", "string"):
        problem = f"missing {what}" if not tokens else f"expected one {what}, found {len(tokens)}"
        raise Reject(problem, f"one {what}; quote it if it holds spaces, commas or #")
    return tokens[0].value


def unknown(kind: str, forms: Sequence[str], clause: Clause) -> Reject:
    """A clause the kind has no form for, with the nearest form when one is close."""
    first = clause.tokens[0].value if clause.tokens[0].kind == "word" else ""
    keywords: dict[str, str] = {}
    for form in forms:
        keywords.setdefault(form.split()[0].strip("[]"), form)
    close = difflib.get_close_matches(first, list(keywords), n=1, cutoff=0.6)
    hint = f" (did you mean '{keywords[close[0]]}'?)" if close else ""
    return Reject(f"unknown {kind} assertion '{clause.text}'{hint}",
                  "one of: " + ", ".join(forms))


def text_match(tokens: Sequence[Token]) -> TextMatch | None:
    """``[not] contains "TEXT"`` or ``[not] matches /REGEX/``, or None if it is neither."""
    negated = bool(tokens) and tokens[0].kind == "word" and tokens[0].value == "not"
    rest = tokens[1:] if negated else tokens
    if not rest or rest[0].kind != "word" or rest[0].value not in ("contains", "matches"):
        return None
    if rest[0].value == "contains":
        text = one_value(rest[1:], '"TEXT" after contains')
        if not text:
            raise Reject("contains needs a non-empty text", 'contains "TEXT"')
        return TextMatch("contains", text, negated)
    if len(rest) != 2 or rest[1].kind != "regex":
        raise Reject("matches needs a regex between slashes", "matches /REGEX/")
    pattern = rest[1].value
    if not pattern:
        raise Reject("matches needs a non-empty regex", "matches /REGEX/")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise Reject(f"invalid regex /{pattern}/: {exc}", "a Python regular expression") from None
    return TextMatch("matches", pattern, negated)


def keyword(clause: Clause, table: dict[tuple[str, ...], T]) -> T | None:
    for words, value in table.items():
        if clause.words(*words):
            return value
    return None


def ip_address(token: Token) -> str:
    raw = token.value.removeprefix("[").removesuffix("]")
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise Reject(f"'{token.value}' is not an IP address",
                      "an IPv4 or IPv6 address such as 127.0.0.1, ::1, 0.0.0.0 or ::") from None


def subject_name(tokens: Sequence[Token], kind: str, pattern: re.Pattern[str],
                 form: str) -> str:
    """The one word naming the subject (a unit, a user, a package), checked against
    ``pattern``; ``form`` is the kind's subject form, for the refusal."""
    if len(tokens) != 1 or tokens[0].kind != "word":
        raise Reject(f"expected one {kind} name before ':'", form)
    name = tokens[0].value
    if name.startswith("-") or not pattern.fullmatch(name):
        raise Reject(f"'{name}' is not a valid {kind} name", form)
    return name


def no_subject(tokens: Sequence[Token], form: str) -> None:
    """Kinds about the one host-wide thing (``ufw:``, ``sshd:``) take nothing before ':'."""
    if tokens:
        raise Reject(f"nothing goes between {form} and ':'", f"{form}: ASSERTION, ...")
