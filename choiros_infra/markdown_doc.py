"""Markdown as the runbooks are read: one parser (markdown-it-py, CommonMark plus tables) for
every consumer, the expect blocks, the rehearsal blocks, the docs lint and the anchors of the
generated reports, so none of them keeps a scanner of its own that disagrees with GitHub's
rendering about where a fence starts, what a heading says or whether a link is in code.

Line numbers are 1-based, as editors and ``file:line`` messages count them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import mdurl
from markdown_it import MarkdownIt
from markdown_it.token import Token


@cache
def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark").enable("table")


@dataclass(frozen=True)
class Fence:
    """A fenced code block: its opening line, info string, body lines and whether it was
    closed before the document ended."""

    line: int
    info: str
    body: tuple[str, ...]
    closed: bool

    @property
    def lang(self) -> str:
        """The info string's first word (what GitHub highlights it as)."""
        return self.info.split()[0] if self.info else ""

    @property
    def words(self) -> tuple[str, ...]:
        """The info string's words after the language."""
        return tuple(self.info.split()[1:])

    def numbered(self) -> list[tuple[int, str]]:
        """Each body line with its line number in the document."""
        return [(self.line + 1 + i, text) for i, text in enumerate(self.body)]


@dataclass(frozen=True)
class Heading:
    """A heading: its line, level (1 for ``#``) and text as rendered (code spans unwrapped)."""

    line: int
    level: int
    text: str

    @property
    def anchor(self) -> str:
        return github_anchor(self.text)


@dataclass(frozen=True)
class Link:
    line: int
    target: str


@dataclass(frozen=True)
class Document:
    """What the consumers need of one Markdown text, in document order."""

    fences: tuple[Fence, ...]
    headings: tuple[Heading, ...]
    links: tuple[Link, ...]
    text_lines: tuple[tuple[int, str], ...]  # lines of paragraphs, as written

    def lines_starting(self, prefix: str) -> list[tuple[int, str]]:
        """Paragraph lines (outside code) that start with ``prefix``."""
        return [(n, t) for n, t in self.text_lines if t.startswith(prefix)]


def parse(text: str) -> Document:
    """Parse ``text`` once into its fences, headings, links and paragraph lines."""
    source = text.splitlines()
    tokens = _parser().parse(text)
    fences: list[Fence] = []
    headings: list[Heading] = []
    links: list[Link] = []
    text_lines: list[tuple[int, str]] = []
    for index, token in enumerate(tokens):
        if token.type == "fence" and token.map:
            fences.append(_fence(token, source))
        elif token.type == "heading_open" and token.map:
            inline = tokens[index + 1]
            headings.append(Heading(token.map[0] + 1, int(token.tag[1]),
                                    plain_text(inline.children or [])))
        elif token.type == "inline" and token.map:
            first = token.map[0] + 1
            links += _links(token, source)
            if tokens[index - 1].type == "paragraph_open":
                text_lines += [(first + i, line.strip())
                               for i, line in enumerate(token.content.splitlines())]
    return Document(tuple(fences), tuple(headings), tuple(links), tuple(text_lines))


def _fence(token: Token, source: list[str]) -> Fence:
    start, end = token.map or (0, 0)
    last = source[end - 1].strip() if end - 1 > start and end - 1 < len(source) else ""
    closed = (len(last) >= len(token.markup) and set(last) == {token.markup[0]})
    body = tuple(token.content.splitlines())
    return Fence(start + 1, token.info.strip(), body, closed)


def _links(inline: Token, source: list[str]) -> list[Link]:
    """The links of an inline run, each at the source line its target is written on (a run
    spans lines; code spans hide their line breaks from the tokens, the source does not)."""
    start, end = inline.map or (0, 0)
    found: list[Link] = []
    line = start
    for child in inline.children or []:
        if child.type != "link_open":
            continue
        target = str(child.attrs.get("href", ""))
        written = (target, mdurl.decode(target))
        for number in range(line, end):
            if any(w and w in source[number] for w in written):
                line = number
                break
        found.append(Link(line + 1, target))
    return found


def plain_text(children: list[Token]) -> str:
    """An inline run as text: code spans and emphasis unwrapped, as GitHub slugs it."""
    return "".join(c.content for c in children if c.type in ("text", "code_inline"))


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped except ``-`` and
    ``_``, spaces as ``-``. ``heading`` may hold inline Markdown (code spans)."""
    tokens = _parser().parseInline(heading)
    text = plain_text(tokens[0].children or []) if tokens else heading
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
