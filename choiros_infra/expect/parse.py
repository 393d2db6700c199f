"""Reading runbooks: the ```` ```expect ```` blocks out of Markdown, each line into a Statement.

Pure: nothing here touches a host. The grammar is documented in
``docs/runbooks/50-testing/expect-grammar.md``; every refusal names the file, the line, the
statement and what the grammar accepts there, so a typo never passes silently.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from choiros_infra.expect.model import (
    Body,
    Check,
    CommandCheck,
    Exists,
    ExitCode,
    FileAssertion,
    FileCheck,
    Group,
    HeaderEquals,
    HeaderMatch,
    HeaderPresent,
    Home,
    HttpAssertion,
    HttpCheck,
    InGroup,
    Installed,
    IsDirectory,
    JsonEquals,
    Listening,
    Mode,
    Owner,
    PackageCheck,
    PortCheck,
    Reachable,
    ServiceCheck,
    ServiceState,
    Shell,
    Source,
    Statement,
    Status,
    SymlinkTo,
    TextMatch,
    UserCheck,
)

EXPECT_INFO = "expect"
HTTP_METHODS = ("GET", "HEAD", "OPTIONS")

TEXT_FORMS = ('[not] contains "TEXT"', "[not] matches /REGEX/")
FORMS: dict[str, tuple[str, ...]] = {
    "service": ("enabled", "disabled", "running", "stopped", "not running"),
    "port": ("open from outside", "closed from outside", "listening", "listening on ADDRESS",
             "not listening", "not listening on ADDRESS"),
    "file": ("exists", "absent", "directory", "symlink to PATH", "mode OCTAL", "owner USER",
             "group GROUP", *TEXT_FORMS),
    "http": ("STATUS (e.g. 200)", "json KEY = VALUE", "header NAME = VALUE",
             "header NAME present", "header NAME absent", 'header NAME [not] contains "TEXT"',
             "header NAME [not] matches /REGEX/", 'body [not] contains "TEXT"',
             "body [not] matches /REGEX/"),
    "command": ("exit CODE", *TEXT_FORMS),
    "user": ("exists", "absent", "shell PATH", "home PATH", "in group GROUP",
             "not in group GROUP"),
    "package": ("installed", "not installed"),
}
SUBJECT_FORMS: dict[str, str] = {
    "service": "service NAME",
    "port": "port NUMBER",
    "file": "file /ABSOLUTE/PATH",
    "http": "http METHOD /PATH via caddy | http METHOD /PATH direct",
    "command": 'command "COMMAND LINE"',
    "user": "user NAME",
    "package": "package NAME",
}
STATEMENT_FORM = "SUBJECT: ASSERTION, ASSERTION, ... (see 50-testing/expect-grammar.md)"

_UNIT_NAME = re.compile(r"[A-Za-z0-9_.@:\\-]+")
_ACCOUNT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\$?")
_PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]*(:[a-z0-9-]+)?")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_JSON_KEY = re.compile(r"[^\s.=]+(\.[^\s.=]+)*")
_MODE = re.compile(r"0?[0-7]{3,4}")
_FENCE = re.compile(r"^\s*(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}


@dataclass(frozen=True)
class ParseError:
    """One refusal: where, what is wrong, the statement as written, what was expected."""

    source: Source
    problem: str
    statement: str | None = None
    expected: str | None = None

    def __str__(self) -> str:
        lines = [f"{self.source}: {self.problem}"]
        if self.statement:
            lines.append(f"    {self.statement}")
        if self.expected:
            lines.append(f"    expected {self.expected}")
        return "\n".join(lines)


class RunbookSyntaxError(ValueError):
    """A runbook's expect blocks do not parse; ``errors`` holds every refusal in the file."""

    def __init__(self, errors: Sequence[ParseError]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(str(error) for error in self.errors))


class _Reject(Exception):
    def __init__(self, problem: str, expected: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.expected = expected


# --- Markdown ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BlockProblem:
    line: int
    problem: str
    expected: str | None = None


def _expect_lines(text: str) -> tuple[list[tuple[int, str]], list[_BlockProblem]]:
    """Every line inside an ``expect`` fence (with its 1-based number), and fence problems.

    Fences follow CommonMark: ``` or ~~~ (3 or more), closed by the same character at least as
    long; an expect fence inside another fence (a Markdown example) is only text.
    """
    lines: list[tuple[int, str]] = []
    problems: list[_BlockProblem] = []
    fence: tuple[str, int, bool, int] | None = None  # char, length, is expect, opening line
    statements = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if fence is None:
            match = _FENCE.match(line)
            if match is None:
                continue
            marks, info = match["fence"], match["info"].strip()
            if marks[0] == "`" and "`" in info:
                continue  # inline code such as ```x```, not a fence
            lang = info.split()[0] if info else ""
            if lang != EXPECT_INFO and lang.lower().startswith(EXPECT_INFO):
                problems.append(_BlockProblem(
                    number, f"code block marked {lang!r} is not checked",
                    f"```{EXPECT_INFO} to make it a checked block (or another language)"))
            fence = (marks[0], len(marks), lang == EXPECT_INFO, number)
            statements = 0
            continue
        char, length, is_expect, opened = fence
        stripped = line.strip()
        if stripped and len(stripped) >= length and set(stripped) == {char}:
            if is_expect and statements == 0:
                problems.append(_BlockProblem(opened, "expect block has no statements",
                                              STATEMENT_FORM))
            fence = None
        elif is_expect:
            lines.append((number, line))
            if stripped and not stripped.startswith("#"):
                statements += 1
    if fence is not None and fence[2]:
        problems.append(_BlockProblem(fence[3], "expect block is never closed",
                                      f"a closing {fence[0] * fence[1]} line"))
    return lines, problems


# --- tokens ------------------------------------------------------------------------------------


TokenKind = Literal["word", "string", "regex", "colon", "comma"]


@dataclass(frozen=True)
class _Token:
    kind: TokenKind
    value: str
    start: int
    end: int


def _scan_string(line: str, start: int) -> tuple[str, int]:
    out: list[str] = []
    i = start + 1
    while i < len(line):
        char = line[i]
        if char == "\\":
            escape = line[i + 1] if i + 1 < len(line) else ""
            if escape not in _ESCAPES:
                raise _Reject(f"unknown escape '\\{escape}' in a string",
                              'one of \\" \\\\ \\n \\t inside "..."')
            out.append(_ESCAPES[escape])
            i += 2
        elif char == '"':
            return "".join(out), i + 1
        else:
            out.append(char)
            i += 1
    raise _Reject("unterminated string", 'a closing " on the same line')


def _scan_regex(line: str, start: int) -> tuple[str, int]:
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
    raise _Reject("unterminated regex", "a closing / (write \\/ for a slash inside it)")


def _tokenize(line: str) -> list[_Token]:
    """Words, "strings", /regexes/ (only right after ``matches``), the first ``:`` that ends a
    word (the subject's end), and commas. ``#`` where a token would start begins a comment."""
    tokens: list[_Token] = []
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
            tokens.append(_Token("comma", ",", i, i + 1))
            i += 1
        elif subject_colon(i):
            tokens.append(_Token("colon", ":", i, i + 1))
            seen_colon = True
            i += 1
        elif char == '"':
            value, end = _scan_string(line, i)
            tokens.append(_Token("string", value, i, end))
            i = end
        elif char == "/" and tokens and tokens[-1].kind == "word" and (
                tokens[-1].value == "matches"):
            value, end = _scan_regex(line, i)
            tokens.append(_Token("regex", value, i, end))
            i = end
        else:
            start = i
            while (i < len(line) and not line[i].isspace() and line[i] not in ',"'
                   and not subject_colon(i)):
                i += 1
            tokens.append(_Token("word", line[start:i], start, i))
    return tokens


# --- clauses -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Clause:
    tokens: tuple[_Token, ...]
    text: str

    def words(self, *words: str) -> bool:
        """The clause is exactly these bare words."""
        return len(self.tokens) == len(words) and all(
            t.kind == "word" and t.value == w for t, w in zip(self.tokens, words, strict=True))

    def starts(self, *words: str) -> bool:
        return len(self.tokens) >= len(words) and all(
            t.kind == "word" and t.value == w for t, w in zip(self.tokens, words, strict=False))

    def after(self, count: int) -> tuple[_Token, ...]:
        return self.tokens[count:]


T = TypeVar("T")


def _one_value(tokens: Sequence[_Token], what: str) -> str:
    """Exactly one word or quoted string."""
    if len(tokens) != 1 or tokens[0].kind not in ("word", "string"):
        problem = f"missing {what}" if not tokens else f"expected one {what}, found {len(tokens)}"
        raise _Reject(problem, f"one {what}; quote it if it holds spaces, commas or #")
    return tokens[0].value


def _unknown(kind: str, clause: _Clause) -> _Reject:
    forms = FORMS[kind]
    first = clause.tokens[0].value if clause.tokens[0].kind == "word" else ""
    keywords: dict[str, str] = {}
    for form in forms:
        keywords.setdefault(form.split()[0].strip("[]"), form)
    close = difflib.get_close_matches(first, list(keywords), n=1, cutoff=0.6)
    hint = f" (did you mean '{keywords[close[0]]}'?)" if close else ""
    return _Reject(f"unknown {kind} assertion '{clause.text}'{hint}",
                   "one of: " + ", ".join(forms))


def _text_match(tokens: Sequence[_Token]) -> TextMatch | None:
    """``[not] contains "TEXT"`` or ``[not] matches /REGEX/``, or None if it is neither."""
    negated = bool(tokens) and tokens[0].kind == "word" and tokens[0].value == "not"
    rest = tokens[1:] if negated else tokens
    if not rest or rest[0].kind != "word" or rest[0].value not in ("contains", "matches"):
        return None
    if rest[0].value == "contains":
        text = _one_value(rest[1:], '"TEXT" after contains')
        if not text:
            raise _Reject("contains needs a non-empty text", 'contains "TEXT"')
        return TextMatch("contains", text, negated)
    if len(rest) != 2 or rest[1].kind != "regex":
        raise _Reject("matches needs a regex between slashes", "matches /REGEX/")
    pattern = rest[1].value
    if not pattern:
        raise _Reject("matches needs a non-empty regex", "matches /REGEX/")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise _Reject(f"invalid regex /{pattern}/: {exc}", "a Python regular expression") from None
    return TextMatch("matches", pattern, negated)


def _keyword(clause: _Clause, table: dict[tuple[str, ...], T]) -> T | None:
    for words, value in table.items():
        if clause.words(*words):
            return value
    return None


def _address(token: _Token) -> str:
    raw = token.value.removeprefix("[").removesuffix("]")
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise _Reject(f"'{token.value}' is not an IP address",
                      "an IPv4 or IPv6 address such as 127.0.0.1, ::1, 0.0.0.0 or ::") from None


def _subject_name(tokens: Sequence[_Token], kind: str, pattern: re.Pattern[str]) -> str:
    if len(tokens) != 1 or tokens[0].kind != "word":
        raise _Reject(f"expected one {kind} name before ':'", SUBJECT_FORMS[kind])
    name = tokens[0].value
    if name.startswith("-") or not pattern.fullmatch(name):
        raise _Reject(f"'{name}' is not a valid {kind} name", SUBJECT_FORMS[kind])
    return name


# --- subjects ----------------------------------------------------------------------------------


def _service(subject: Sequence[_Token], clauses: Sequence[_Clause]) -> ServiceCheck:
    name = _subject_name(subject, "service", _UNIT_NAME)
    table = {("enabled",): ServiceState.ENABLED, ("disabled",): ServiceState.DISABLED,
             ("running",): ServiceState.RUNNING, ("stopped",): ServiceState.STOPPED,
             ("not", "running"): ServiceState.STOPPED}
    states: list[ServiceState] = []
    for clause in clauses:
        state = _keyword(clause, table)
        if state is None:
            raise _unknown("service", clause)
        states.append(state)
    return ServiceCheck(name, tuple(states))


def _port(subject: Sequence[_Token], clauses: Sequence[_Clause]) -> PortCheck:
    raw = _one_value(subject, "port number")
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise _Reject(f"'{raw}' is not a TCP port", SUBJECT_FORMS["port"] + " (1-65535)")
    expect: list[Reachable | Listening] = []
    for clause in clauses:
        reach = _keyword(clause, {("open", "from", "outside"): True,
                                  ("closed", "from", "outside"): False})
        if reach is not None:
            expect.append(Reachable(reach))
            continue
        negated = clause.starts("not", "listening")
        rest = clause.after(2 if negated else 1)
        if (negated or clause.starts("listening")) and not rest:
            expect.append(Listening(None, negated))
        elif (negated or clause.starts("listening")) and len(rest) == 2 and (
                rest[0].kind == "word" and rest[0].value == "on"):
            expect.append(Listening(_address(rest[1]), negated))
        else:
            raise _unknown("port", clause)
    return PortCheck(int(raw), tuple(expect))


def _file(subject: Sequence[_Token], clauses: Sequence[_Clause]) -> FileCheck:
    path = _one_value(subject, "path")
    if not path.startswith("/"):
        raise _Reject(f"'{path}' is not an absolute path", SUBJECT_FORMS["file"])
    expect: list[FileAssertion] = []
    table: dict[tuple[str, ...], Exists | IsDirectory] = {
        ("exists",): Exists(True), ("absent",): Exists(False), ("directory",): IsDirectory()}
    for clause in clauses:
        simple = _keyword(clause, table)
        match = _text_match(clause.tokens)
        if simple is not None:
            expect.append(simple)
        elif match is not None:
            expect.append(match)
        elif clause.starts("symlink", "to"):
            expect.append(SymlinkTo(_one_value(clause.after(2), "link target")))
        elif clause.starts("mode"):
            mode = _one_value(clause.after(1), "octal mode")
            if not _MODE.fullmatch(mode):
                raise _Reject(f"'{mode}' is not an octal mode", "mode OCTAL such as 0644")
            expect.append(Mode(int(mode, 8)))
        elif clause.starts("owner"):
            expect.append(Owner(_one_value(clause.after(1), "user name")))
        elif clause.starts("group"):
            expect.append(Group(_one_value(clause.after(1), "group name")))
        else:
            raise _unknown("file", clause)
    return FileCheck(path, tuple(expect))


def _http(subject: Sequence[_Token], clauses: Sequence[_Clause]) -> HttpCheck:
    values = [t.value for t in subject]
    if len(subject) == 4 and values[2:] == ["via", "caddy"]:
        via: Literal["caddy", "direct"] = "caddy"
    elif len(subject) == 3 and values[2] == "direct":
        via = "direct"
    else:
        raise _Reject("malformed http subject", SUBJECT_FORMS["http"])
    method, path = values[0], values[1]
    if method not in HTTP_METHODS:
        raise _Reject(f"'{method}' is not a checked HTTP method",
                      "one of " + ", ".join(HTTP_METHODS) + " (checks never change the host)")
    if not path.startswith("/") or any(c.isspace() for c in path):
        raise _Reject(f"'{path}' is not a request path", "a path starting with /, e.g. /health")
    expect: list[HttpAssertion] = []
    for clause in clauses:
        first = clause.tokens[0]
        if len(clause.tokens) == 1 and first.kind == "word" and first.value.isdigit():
            if not 100 <= int(first.value) <= 599:
                raise _Reject(f"'{first.value}' is not an HTTP status", "a status 100-599")
            expect.append(Status(int(first.value)))
        elif clause.starts("json"):
            rest = clause.after(1)
            if (len(rest) != 3 or rest[0].kind != "word" or not _JSON_KEY.fullmatch(rest[0].value)
                    or rest[1].kind != "word" or rest[1].value != "="):
                raise _Reject(f"malformed json assertion '{clause.text}'",
                              "json KEY = VALUE, e.g. json status = healthy (spaces around =)")
            expect.append(JsonEquals(rest[0].value, _one_value(rest[2:], "value")))
        elif clause.starts("header"):
            expect.append(_header(clause))
        elif clause.starts("body"):
            match = _text_match(clause.after(1))
            if match is None:
                raise _unknown("http", clause)
            expect.append(Body(match))
        else:
            raise _unknown("http", clause)
    return HttpCheck(method, path, via, tuple(expect))


def _header(clause: _Clause) -> HttpAssertion:
    rest = clause.after(1)
    if not rest or rest[0].kind != "word" or not _HEADER_NAME.fullmatch(rest[0].value):
        raise _Reject(f"malformed header assertion '{clause.text}'", "header NAME ...")
    name, tail = rest[0].value, rest[1:]
    if len(tail) == 1 and tail[0].kind == "word" and tail[0].value in ("present", "absent"):
        return HeaderPresent(name, tail[0].value == "present")
    if tail and tail[0].kind == "word" and tail[0].value == "=":
        return HeaderEquals(name, _one_value(tail[1:], "header value"))
    match = _text_match(tail)
    if match is None:
        raise _Reject(f"malformed header assertion '{clause.text}'",
                      "one of: " + ", ".join(f for f in FORMS["http"] if f.startswith("header")))
    return HeaderMatch(name, match)


def _command(subject: Sequence[_Token], clauses: Sequence[_Clause]) -> CommandCheck:
    if len(subject) != 1 or subject[0].kind != "string" or not subject[0].value.strip():
        raise _Reject("the command must be one quoted string", SUBJECT_FORMS["command"])
    expect: list[ExitCode | TextMatch] = []
    for clause in clauses:
        match = _text_match(clause.tokens)
        if match is not None:
            expect.append(match)
        elif clause.starts("exit"):
            code = _one_value(clause.after(1), "exit status")
            if not code.isdigit() or int(code) > 255:
                raise _Reject(f"'{code}' is not an exit status", "exit CODE, 0-255")
            expect.append(ExitCode(int(code)))
        else:
            raise _unknown("command", clause)
    if not any(isinstance(a, ExitCode) for a in expect):
        expect.insert(0, ExitCode(0))
    return CommandCheck(subject[0].value, tuple(expect))


def _user(subject: Sequence[_Token], clauses: Sequence[_Clause]) -> UserCheck:
    name = _subject_name(subject, "user", _ACCOUNT_NAME)
    expect: list[Exists | Shell | Home | InGroup] = []
    for clause in clauses:
        simple = _keyword(clause, {("exists",): Exists(True), ("absent",): Exists(False)})
        if simple is not None:
            expect.append(simple)
        elif clause.starts("shell"):
            expect.append(Shell(_one_value(clause.after(1), "shell path")))
        elif clause.starts("home"):
            expect.append(Home(_one_value(clause.after(1), "home directory")))
        elif clause.starts("in", "group") or clause.starts("not", "in", "group"):
            negated = clause.starts("not")
            group = _one_value(clause.after(3 if negated else 2), "group name")
            expect.append(InGroup(group, negated))
        else:
            raise _unknown("user", clause)
    return UserCheck(name, tuple(expect))


def _package(subject: Sequence[_Token], clauses: Sequence[_Clause]) -> PackageCheck:
    name = _subject_name(subject, "package", _PACKAGE_NAME)
    expect: list[Installed] = []
    for clause in clauses:
        installed = _keyword(clause, {("installed",): True, ("not", "installed"): False})
        if installed is None:
            raise _unknown("package", clause)
        expect.append(Installed(installed))
    return PackageCheck(name, tuple(expect))


_SUBJECTS: dict[str, Callable[[Sequence[_Token], Sequence[_Clause]], Check]] = {
    "service": _service,
    "port": _port,
    "file": _file,
    "http": _http,
    "command": _command,
    "user": _user,
    "package": _package,
}


def _slot(assertion: object) -> object:
    """Assertions with the same slot contradict or repeat each other; None never conflicts."""
    match assertion:
        case ServiceState.ENABLED | ServiceState.DISABLED:
            return "enabled"
        case ServiceState.RUNNING | ServiceState.STOPPED:
            return "running"
        case Reachable() | Exists() | Mode() | Owner() | Group() | SymlinkTo() | Status() \
                | ExitCode() | Shell() | Home() | Installed():
            return type(assertion).__name__
        case Listening(address=address):
            return ("listening", address)
        case TextMatch(kind=kind, pattern=pattern):
            return ("text", kind, pattern)
        case Body(match=TextMatch(kind=kind, pattern=pattern)):
            return ("body", kind, pattern)
        case JsonEquals(key=key):
            return ("json", key)
        case HeaderEquals(name=name) | HeaderPresent(name=name):
            return ("header", name.lower())
        case HeaderMatch(name=name, match=TextMatch(kind=kind, pattern=pattern)):
            return ("header", name.lower(), kind, pattern)
        case InGroup(group=group):
            return ("group", group)
    return None


def _check_consistent(check: Check, clauses: Sequence[_Clause]) -> None:
    # A command's implicit `exit 0` comes first and was not written: skip it.
    assertions: Sequence[object] = check.expect[len(check.expect) - len(clauses):]
    seen: dict[object, str] = {}
    for assertion, clause in zip(assertions, clauses, strict=True):
        slot = _slot(assertion)
        if slot is None:
            continue
        if slot in seen:
            raise _Reject(f"'{clause.text}' contradicts or repeats '{seen[slot]}'",
                          "each property stated once per statement")
        seen[slot] = clause.text
    if Exists(False) in assertions and len(assertions) > 1:
        raise _Reject("'absent' cannot be combined with other assertions",
                      "absent alone, or drop it")


def parse_statement(line: str, source: Source) -> Statement:
    """One statement (a line from an expect block); raises RunbookSyntaxError."""
    try:
        return _parse_statement(line, source)
    except _Reject as reject:
        raise RunbookSyntaxError([ParseError(source, reject.problem, line.strip(),
                                             reject.expected)]) from None


def _parse_statement(line: str, source: Source) -> Statement:
    tokens = _tokenize(line)
    if not tokens:
        raise _Reject("empty statement", STATEMENT_FORM)
    text = line[tokens[0].start:tokens[-1].end]
    colons = [i for i, t in enumerate(tokens) if t.kind == "colon"]
    keyword = tokens[0].value if tokens[0].kind == "word" else ""
    if keyword not in _SUBJECTS:
        close = difflib.get_close_matches(keyword, list(_SUBJECTS), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise _Reject(f"unknown subject '{keyword or tokens[0].value}'{hint}",
                      "a statement starting with one of: " + ", ".join(_SUBJECTS))
    if not colons:
        raise _Reject("missing ': ' after the subject",
                      f"{SUBJECT_FORMS[keyword]}: ASSERTION, ASSERTION, ...")
    subject, rest = tokens[1:colons[0]], tokens[colons[0] + 1:]
    if not rest:
        raise _Reject("no assertion after ':'", "one of: " + ", ".join(FORMS[keyword]))
    clauses: list[_Clause] = []
    current: list[_Token] = []
    for token in [*rest, _Token("comma", ",", len(line), len(line))]:
        if token.kind != "comma":
            current.append(token)
            continue
        if not current:
            raise _Reject("empty assertion between commas",
                          "one of: " + ", ".join(FORMS[keyword]))
        clauses.append(_Clause(tuple(current), line[current[0].start:current[-1].end]))
        current = []
    check = _SUBJECTS[keyword](subject, clauses)
    _check_consistent(check, clauses)
    return Statement(source, text, check)


# --- files -------------------------------------------------------------------------------------


def parse_text(text: str, path: Path | str, name: str | None = None) -> list[Statement]:
    """Every statement in a runbook's text, in order. ``path`` is how errors name the file,
    ``name`` how items are named (default: ``path``). Raises RunbookSyntaxError listing every
    problem in the file."""
    path = Path(path)
    name = name if name is not None else path.as_posix()
    lines, problems = _expect_lines(text)
    errors = [ParseError(Source(path, name, p.line), p.problem, None, p.expected)
              for p in problems]
    statements: list[Statement] = []
    for number, line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        source = Source(path, name, number)
        try:
            statements.append(_parse_statement(line, source))
        except _Reject as reject:
            errors.append(ParseError(source, reject.problem, stripped, reject.expected))
    if errors:
        raise RunbookSyntaxError(sorted(errors, key=lambda e: e.source.line))
    return statements


def parse_file(path: Path | str, root: Path | str | None = None) -> list[Statement]:
    """Every statement in one runbook; items are named relative to ``root`` when given."""
    path = Path(path)
    name = path.relative_to(root).as_posix() if root is not None else path.as_posix()
    return parse_text(path.read_text(encoding="utf-8"), path, name)


def runbook_files(root: Path | str) -> list[Path]:
    """The Markdown files under ``root``, sorted."""
    return sorted(p for p in Path(root).rglob("*.md") if p.is_file())


def iter_runbook_statements(root: Path | str) -> Iterator[Statement]:
    """Every statement in every runbook under ``root``; raises on the first file that does not
    parse (use lint_runbooks to see every problem at once)."""
    for path in runbook_files(root):
        yield from parse_file(path, root)


def lint_runbooks(root: Path | str) -> list[ParseError]:
    """Every parse problem in every runbook under ``root`` (empty when all parse)."""
    errors: list[ParseError] = []
    for path in runbook_files(root):
        try:
            parse_file(path, root)
        except RunbookSyntaxError as exc:
            errors.extend(exc.errors)
    return errors
