"""Reading a report page back: elements with their attributes, section and text.

A small :class:`html.parser.HTMLParser` walk, enough for the report's flat
markup (the page is ours, written by :mod:`voipflow.report.render`, and
Chromium's ``--dump-dom`` serialises it back in the same shape).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

_VOID = {"meta", "br", "img", "input", "link", "hr", "source", "wbr", "area", "col"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    section: str
    parent: Element | None = None
    children: list[Element] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The text inside, children included, as a reader sees it."""
        return "".join(self.texts + [c.text() for c in self.children]).strip()

    def find(self, tag: str) -> list[Element]:
        out = []
        for c in self.children:
            if c.tag == tag:
                out.append(c)
            out += c.find(tag)
        return out


class _Walk(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#root", {}, "")
        self.stack = [self.root]
        self.all: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        parent = self.stack[-1]
        a = {k: v or "" for k, v in attrs}
        section = a["id"] if tag == "section" and "id" in a else parent.section
        el = Element(tag, a, section, parent)
        parent.children.append(el)
        self.all.append(el)
        if tag not in _VOID:
            self.stack.append(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        parent = self.stack[-1]
        el = Element(tag, {k: v or "" for k, v in attrs}, parent.section, parent)
        parent.children.append(el)
        self.all.append(el)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        # Text goes to the innermost open element; <title> tooltips stay with their mark.
        self.stack[-1].texts.append(data)


def parse(html: str) -> list[Element]:
    """Every element of the page in document order."""
    w = _Walk()
    w.feed(html)
    w.close()
    return w.all


def by_section(elements: list[Element], tag: str) -> dict[str, int]:
    """How many ``tag`` elements each section holds."""
    out: dict[str, int] = {}
    for e in elements:
        if e.tag == tag and e.section:
            out[e.section] = out.get(e.section, 0) + 1
    return out


def table_rows(elements: list[Element], cls: str) -> list[list[str]]:
    """The body rows of the table with class ``cls``, as cell texts."""
    (table,) = [e for e in elements if e.tag == "table" and e.attrs.get("class") == cls]
    (body,) = table.find("tbody")
    return [[td.text() for td in tr.find("td")] for tr in body.find("tr")]
