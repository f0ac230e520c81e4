"""Format detection and text extraction for knowledge documents.

Four formats are understood: Markdown, plain text, HTML (read with the standard
library's :mod:`html.parser`) and CSV files of question/answer pairs. Each is
turned into a :class:`ParsedDocument`: a title and a list of :class:`Section`
objects, each a heading path with its paragraphs. Nothing here touches the
database; every problem with the input raises :class:`IngestError` naming the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import PurePosixPath

MARKDOWN = "text/markdown"
PLAIN = "text/plain"
HTML = "text/html"
CSV = "text/csv"

CONTENT_TYPES: dict[str, str] = {
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".mdown": MARKDOWN,
    ".txt": PLAIN,
    ".text": PLAIN,
    ".html": HTML,
    ".htm": HTML,
    ".xhtml": HTML,
    ".csv": CSV,
}
"""File extensions botloom can ingest, and the content type each stands for."""

_TYPE_ALIASES: dict[str, str] = {
    "markdown": MARKDOWN,
    "md": MARKDOWN,
    "text/x-markdown": MARKDOWN,
    "text": PLAIN,
    "txt": PLAIN,
    "plain": PLAIN,
    "html": HTML,
    "application/xhtml+xml": HTML,
    "csv": CSV,
    "application/csv": CSV,
}

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
"""The default size limit of one document (5 MB)."""


class IngestError(ValueError):
    """A document cannot be ingested; the message names the file (and the line, for CSV)."""


@dataclass(frozen=True)
class Section:
    """Consecutive paragraphs under one heading path."""

    path: tuple[str, ...]
    """The headings above the paragraphs, outermost first (the document title leads)."""
    paragraphs: tuple[str, ...]
    atomic: bool = False
    """Keep the section as one chunk when it fits (a CSV question and its answer)."""


@dataclass(frozen=True)
class ParsedDocument:
    """The clean text of one document, in sections."""

    content_type: str
    title: str
    sections: list[Section] = field(default_factory=list)


def detect_content_type(name: str, content_type: str | None = None) -> str:
    """The content type of document ``name``: ``content_type`` when given, else from the extension.

    A name without an extension is plain text; any other extension (``.pdf``,
    ``.docx``, ...) raises :class:`IngestError`.
    """
    if content_type:
        key = content_type.split(";", 1)[0].strip().lower()
        resolved = _TYPE_ALIASES.get(key, key)
        if resolved in CONTENT_TYPES.values():
            return resolved
        raise IngestError(f"{name}: unsupported content type {content_type!r} (supported: {_supported()})")
    suffix = PurePosixPath(name).suffix.lower()
    if not suffix:
        return PLAIN
    if suffix in CONTENT_TYPES:
        return CONTENT_TYPES[suffix]
    raise IngestError(f"{name}: unsupported file type {suffix!r} (supported: {_supported()})")


def _supported() -> str:
    return ", ".join(sorted(CONTENT_TYPES))


def decode(name: str, content: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """The text of ``content``: size-checked, NUL-free, UTF-8 (or UTF-16 with a byte-order mark).

    Raises :class:`IngestError` for empty, oversized, binary or undecodable content.
    """
    size = len(content.encode("utf-8", "surrogatepass")) if isinstance(content, str) else len(content)
    if size > max_bytes:
        raise IngestError(f"{name}: file is too large ({size:,} bytes; the limit is {max_bytes:,} bytes)")
    if isinstance(content, str):
        text = content
    elif content.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = content.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise IngestError(f"{name}: not valid UTF-16 text (byte {exc.start})") from exc
    else:
        if b"\x00" in content:
            raise IngestError(f"{name}: binary file (contains NUL bytes), not text")
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise IngestError(f"{name}: not UTF-8 text (undecodable byte at offset {exc.start})") from exc
    if "\x00" in text:
        raise IngestError(f"{name}: binary file (contains NUL bytes), not text")
    text = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    text = _CONTROL.sub("", text)
    if not text.strip():
        raise IngestError(f"{name}: file is empty")
    return text


_CONTROL = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\u00a0]+")


def clean(text: str) -> str:
    """Collapse runs of spaces and tabs and strip each line; keep line breaks."""
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def title_from_name(name: str) -> str:
    """A readable title from a file name: ``store-hours.txt`` → ``Store hours``."""
    stem = PurePosixPath(name).stem or name
    words = re.sub(r"[-_.]+", " ", stem).strip()
    return (words[:1].upper() + words[1:]) if words else name


def parse(
    name: str, content: bytes | str, *, content_type: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES
) -> ParsedDocument:
    """Detect the format of ``content``, decode it and extract its sections.

    Raises :class:`IngestError` for unsupported, empty, binary, oversized or
    malformed input, and for documents without any text.
    """
    kind = detect_content_type(name, content_type)
    return parse_text(name, decode(name, content, max_bytes=max_bytes), kind)


def parse_text(name: str, text: str, content_type: str) -> ParsedDocument:
    """Extract the sections of decoded ``text`` of a known content type (see :func:`parse`)."""
    if content_type == CSV:
        doc = parse_csv(name, text)
    elif content_type == HTML:
        doc = parse_html(name, text)
    elif content_type == MARKDOWN:
        doc = parse_markdown(name, text)
    else:
        doc = parse_plain(name, text)
    if not any(p.strip() for s in doc.sections for p in s.paragraphs):
        raise IngestError(f"{name}: no text found in the document")
    return doc


# ------------------------------------------------------------------------------ outline


class _Outline:
    """Collects paragraphs under a stack of headings."""

    def __init__(self, default_title: str) -> None:
        self.title = default_title
        self.stack: list[tuple[int, str]] = []
        self.sections: list[Section] = []
        self._paragraphs: list[str] = []

    def path(self) -> tuple[str, ...]:
        names = tuple(text for _, text in self.stack)
        if self.stack and self.stack[0][0] == 1:
            return names
        return (self.title, *names)

    def heading(self, level: int, text: str) -> None:
        text = clean(text).replace("\n", " ")
        if not text:
            return
        self.flush()
        if level == 1 and not self.sections and not any(lv == 1 for lv, _ in self.stack):
            self.title = text
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, text))

    def paragraph(self, text: str) -> None:
        text = clean(text)
        if text:
            self._paragraphs.append(text)

    def flush(self) -> None:
        if self._paragraphs:
            self.sections.append(Section(self.path(), tuple(self._paragraphs)))
            self._paragraphs = []

    def done(self, content_type: str) -> ParsedDocument:
        self.flush()
        return ParsedDocument(content_type, self.title, self.sections)


# ------------------------------------------------------------------------------ markdown

_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n(?:---|\.\.\.)\n", re.DOTALL)
_ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_RULE = re.compile(r"^ {0,3}([-*_])(\s*\1){2,}\s*$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_REF_LINK = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_LINK_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s+\S+.*$")
_AUTOLINK = re.compile(r"<((?:https?://|mailto:)[^>]+)>")
_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][^>]*>", re.DOTALL)
_EMPHASIS = re.compile(r"(\*\*|__|\*|_|~~)(?=\S)(.+?)(?<=\S)\1")
_CODE = re.compile(r"`+([^`]+)`+")
_LIST = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_QUOTE = re.compile(r"^\s*>\s?")


def _inline_markdown(line: str) -> str:
    line = _IMAGE.sub(r"\1", line)
    line = _LINK.sub(r"\1", line)
    line = _REF_LINK.sub(r"\1", line)
    line = _AUTOLINK.sub(r"\1", line)
    line = _TAG.sub("", line)
    line = _CODE.sub(r"\1", line)
    for _ in range(2):
        line = _EMPHASIS.sub(r"\2", line)
    return line.replace("\\", "")


def parse_markdown(name: str, text: str) -> ParsedDocument:
    """Sections of a Markdown document: ATX and setext headings, paragraphs, lists, tables, code."""
    outline = _Outline(title_from_name(name))
    match = _FRONT_MATTER.match(text)
    if match:
        title = re.search(r"^title:\s*[\"']?(.*?)[\"']?\s*$", match.group(1), re.MULTILINE)
        if title and title.group(1):
            outline.title = title.group(1)
        text = text[match.end() :]
    _MarkdownReader(outline, re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL).split("\n")).read()
    return outline.done(MARKDOWN)


class _MarkdownReader:
    """Reads Markdown lines into an outline, one block (paragraph, list, table, code) at a time."""

    def __init__(self, outline: _Outline, lines: list[str]) -> None:
        self.outline = outline
        self.lines = lines
        self.block: list[str] = []
        self.fence: str | None = None

    def flush(self) -> None:
        """End the current block: it becomes a paragraph."""
        if self.block:
            self.outline.paragraph("\n".join(self.block))
            self.block.clear()

    def read(self) -> None:
        """Read every line, then end the last block."""
        for i, raw in enumerate(self.lines):
            if self.fence is not None:
                self._in_code(raw)
            elif not self._structure(i, raw):
                self._text(raw)
        self.flush()

    def _in_code(self, raw: str) -> None:
        if self.fence is not None and raw.strip().startswith(self.fence):
            self.fence = None
            self.flush()
        else:
            self.block.append(raw)

    def _structure(self, i: int, raw: str) -> bool:
        """Handle a line that opens code, is a heading or separates blocks; whether it was one."""
        fence_match = _FENCE.match(raw)
        if fence_match:
            self.flush()
            self.fence = fence_match.group(1)
            return True
        atx = _ATX.match(raw)
        if atx:
            self.flush()
            self.outline.heading(len(atx.group(1)), _inline_markdown(atx.group(2)))
            return True
        nxt = self.lines[i + 1] if i + 1 < len(self.lines) else ""
        if raw.strip() and not self.block and _SETEXT.match(nxt) and not _LIST.match(raw) and not _RULE.match(raw):
            self.flush()
            self.outline.heading(1 if nxt.strip().startswith("=") else 2, _inline_markdown(raw))
            self.lines[i + 1] = ""
            return True
        if not raw.strip() or _RULE.match(raw) or _LINK_DEF.match(raw):
            self.flush()
            return True
        return bool(_TABLE_RULE.match(raw) and "-" in raw)

    def _text(self, raw: str) -> None:
        line = _QUOTE.sub("", raw)
        if line.lstrip().startswith("|") or line.count("|") >= 2:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            line = " — ".join(c for c in cells if c)
        line = line.strip() if _LIST.match(line) else line
        self.block.append(_inline_markdown(line))


# ------------------------------------------------------------------------------ plain text

_SENTENCE_END = tuple(".?!:;,")


def parse_plain(name: str, text: str) -> ParsedDocument:
    """Sections of a plain-text document: paragraphs split on blank lines.

    A paragraph of one short line without closing punctuation, followed by
    more text, counts as a heading (the first one as the document's title), as
    does a line underlined with ``===`` or ``---``.
    """
    outline = _Outline(title_from_name(name))
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    for index, para in enumerate(paragraphs):
        lines = [line for line in para.split("\n") if line.strip()]
        if len(lines) == 2 and _SETEXT.match(lines[1]):
            outline.heading(1 if index == 0 else 2, lines[0])
            continue
        line = lines[0].strip()
        is_heading = (
            len(lines) == 1
            and len(line) <= 80
            and not line.endswith(_SENTENCE_END)
            and not line.startswith(("-", "*", "•"))
            and index + 1 < len(paragraphs)
        )
        if is_heading:
            outline.heading(1 if index == 0 else 2, line)
        else:
            outline.paragraph(para)
    return outline.done(PLAIN)


# ------------------------------------------------------------------------------ html

_HTML_SKIP = frozenset({"script", "style", "noscript", "template", "svg", "nav", "head", "iframe", "object", "form"})
_HTML_BLOCK = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "caption",
        "dd",
        "details",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "header",
        "hr",
        "li",
        "main",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
    }
)
_HTML_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_HTML_VOID = frozenset({"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source", "wbr"})


class _HtmlExtractor(HTMLParser):
    def __init__(self, outline: _Outline) -> None:
        super().__init__(convert_charrefs=True)
        self.outline = outline
        self.skip: list[str] = []
        self.heading: int | None = None
        self.buffer: list[str] = []
        self.page_title: list[str] = []
        self.in_title = False
        self.pre = 0

    def _flush(self) -> None:
        text = "".join(self.buffer)
        self.buffer = []
        if self.heading is not None:
            self.outline.heading(self.heading, " ".join(text.split()))
        elif self.pre:
            self.outline.paragraph(text)
        else:
            self.outline.paragraph(" ".join(text.split()))

    def _skips(self, tag: str, attrs: list[tuple[str, str | None]]) -> bool:
        """Whether ``tag`` is inside, or starts, content a reader does not see (scripts, hidden parts)."""
        hidden = tag in _HTML_SKIP or any(k == "hidden" or (k == "aria-hidden" and v == "true") for k, v in attrs)
        if not (self.skip or hidden):
            return False
        if tag not in _HTML_VOID:
            self.skip.append(tag)
        return True

    def _start_block(self, tag: str) -> None:
        """A block element starts: cells are joined, list items bulleted, other blocks end a paragraph."""
        if tag in {"td", "th"}:
            if "".join(self.buffer).strip():
                self.buffer.append(" — ")
        elif tag == "li":
            self._flush()
            self.buffer.append("- ")
        elif tag == "br":
            self.buffer.append("\n")
        else:
            self._flush()
        if tag == "pre":
            self.pre += 1

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
            return
        if self._skips(tag, attrs):
            return
        if tag in _HTML_HEADINGS:
            self._flush()
            self.heading = _HTML_HEADINGS[tag]
        elif tag in _HTML_BLOCK:
            self._start_block(tag)
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.buffer.append(f" {alt} ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _HTML_VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
            title = " ".join("".join(self.page_title).split())
            if title and not self.outline.stack and not self.outline.sections:
                self.outline.title = title
            return
        if self.skip:
            if tag in self.skip:
                while self.skip and self.skip.pop() != tag:
                    pass
            return
        if tag in _HTML_HEADINGS and self.heading is not None:
            self._flush()
            self.heading = None
        elif tag in _HTML_BLOCK and tag not in {"td", "th", "br"}:
            self._flush()
            if tag == "pre":
                self.pre = max(0, self.pre - 1)

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.page_title.append(data)
        elif not self.skip:
            self.buffer.append(data)


def parse_html(name: str, text: str) -> ParsedDocument:
    """Sections of an HTML page: headings ``h1``–``h6`` and block elements; scripts, styles, navigation skipped."""
    outline = _Outline(title_from_name(name))
    parser = _HtmlExtractor(outline)
    parser.feed(text)
    parser.close()
    parser._flush()
    return outline.done(HTML)


_TITLE_ELEMENT = re.compile(r"<title\b.*?</title\s*>", re.IGNORECASE | re.DOTALL)


def html_to_text(html: str) -> str:
    """Readable plain text of an HTML page or fragment (an HTML-only e-mail, a web form's rich text).

    Headings and block elements become paragraphs separated by blank lines, list
    items start with ``- ``; scripts, styles, hidden elements and the page's
    ``<title>`` are dropped.
    """
    document = parse_html("", _TITLE_ELEMENT.sub("", html))
    blocks: list[str] = []
    shown: tuple[str, ...] = ()
    for section in document.sections:
        path = section.path[1:] if section.path[:1] == ("",) else section.path
        common = next(
            (i for i, (a, b) in enumerate(zip(path, shown, strict=False)) if a != b), min(len(path), len(shown))
        )
        blocks.extend(path[common:])
        blocks.extend(section.paragraphs)
        shown = path
    return "\n\n".join(blocks)


# ------------------------------------------------------------------------------ csv

QUESTION_COLUMNS = ("question", "questions", "q", "query", "prompt")
ANSWER_COLUMNS = ("answer", "answers", "a", "response", "reply")
CATEGORY_COLUMNS = ("category", "topic", "section")


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    normalized = [h.strip().lower() for h in header]
    for candidate in names:
        if candidate in normalized:
            return normalized.index(candidate)
    return None


def parse_csv(name: str, text: str) -> ParsedDocument:
    """One atomic section per row of a CSV file with ``question`` and ``answer`` columns.

    An optional ``category`` column adds a heading level. A row with the wrong
    number of fields, an empty question or answer, or broken quoting raises
    :class:`IngestError` naming the file and the line.
    """
    title = title_from_name(name)
    first_line = text.split("\n", 1)[0]
    delimiter = ","
    for candidate in (",", ";", "\t", "|"):
        fields = next(csv.reader([first_line], delimiter=candidate))
        if _column(fields, QUESTION_COLUMNS) is not None and _column(fields, ANSWER_COLUMNS) is not None:
            delimiter = candidate
            break
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True)
    sections: list[Section] = []
    line = 1
    try:
        header = next(reader, None)
        if header is None:
            raise IngestError(f"{name}: file is empty")
        q_col, a_col = _column(header, QUESTION_COLUMNS), _column(header, ANSWER_COLUMNS)
        c_col = _column(header, CATEGORY_COLUMNS)
        if q_col is None or a_col is None:
            found = ", ".join(repr(h) for h in header) or "nothing"
            raise IngestError(
                f"{name}: line 1: a question/answer CSV needs a header with 'question' and 'answer' columns "
                f"(found {found})"
            )
        line = reader.line_num + 1
        for row in reader:
            if any(cell.strip() for cell in row):
                if len(row) != len(header):
                    raise IngestError(
                        f"{name}: line {line}: expected {len(header)} fields as in the header, found {len(row)}"
                    )
                question, answer = clean(row[q_col]), clean(row[a_col])
                if not question or not answer:
                    missing = "question" if not question else "answer"
                    raise IngestError(f"{name}: line {line}: the {missing} is empty")
                category = clean(row[c_col]) if c_col is not None else ""
                path = (title, category, question) if category else (title, question)
                sections.append(Section(path, (answer,), atomic=True))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise IngestError(f"{name}: line {line}: malformed CSV ({exc})") from exc
    if not sections:
        raise IngestError(f"{name}: no question/answer rows")
    return ParsedDocument(CSV, title, sections)
