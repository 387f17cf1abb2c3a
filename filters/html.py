"""What an HTML body shows and where it points: visible text, link targets with their text,
image alt texts.

lxml's HTML parser is used directly: it is about fifteen times faster than BeautifulSoup on
real mail and just as forgiving. Text is taken as a reader sees it: no script, style or head,
nothing hidden with `display:none`, a space between blocks but none between inline elements
(phishers split a brand name over several spans: "Pay<span>Pal</span>" reads "PayPal").
"""

from __future__ import annotations

import html as htmllib
import re
from dataclasses import dataclass, field

import lxml.etree

SHOWN_MAX = 200

# The plain etree parser, not lxml.html's: that one looks up a Python element class for every
# node, which costs more than the parse itself. libxml2 gives tag names in lower case.
# huge_tree lifts libxml2's nesting limit from 256 to 2048: a few hundred unclosed <div>s must
# not hide the rest of a message from us.
_PARSER = lxml.etree.HTMLParser(
    encoding="utf-8", remove_comments=True, remove_pis=True, huge_tree=True
)
# Elements that may be hidden, found in C; _hidden() confirms each (a Python regex over the
# style attributes is faster than XPath's case folding).
_STYLED = lxml.etree.XPath("//*[@hidden or @style]")
_SKIP = frozenset({"script", "style", "template", "xml", "object", "embed", "iframe"})
_NO_TEXT = frozenset({"head", "title"})
_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "button", "center", "dd", "details",
        "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3",
        "h4", "h5", "h6", "header", "hr", "input", "label", "li", "main", "nav", "ol", "option",
        "p", "pre", "section", "select", "summary", "table", "tbody", "td", "textarea", "tfoot",
        "th", "thead", "tr", "ul",
    }
)  # fmt: skip
_HIDDEN_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?:\.0*)?(?:px|pt|em|%)?\s*(?:;|$|!)",
    re.IGNORECASE,
)
# What each tag means to the walk, as bit flags: one dict lookup per element.
_MUTE_SUBTREE, _NO_TEXT_ROLE, _LINK_ROLE, _BLOCK_ROLE = 1, 2, 4, 8
_LINK_TAGS = frozenset({"a", "img", "area", "form", "base", "meta"})
_ROLE: dict[str, int] = {}
for _tags, _flag in (
    (_SKIP, _MUTE_SUBTREE),
    (_NO_TEXT, _NO_TEXT_ROLE),
    (_LINK_TAGS, _LINK_ROLE),
    (_BLOCK, _BLOCK_ROLE),
):
    for _tag in _tags:
        _ROLE[_tag] = _ROLE.get(_tag, 0) | _flag
_OTHER = _MUTE_SUBTREE  # comments and processing instructions: no text of their own
_SPACES = re.compile(r"\s+")
_REFRESH_URL = re.compile(r"url\s*=\s*['\"]?([^'\"\s>]+)", re.IGNORECASE)
# Fallback when lxml refuses a document: crude, but never without links.
_ATTR_URL = re.compile(
    r"<\s*(a|area|img|form)\b[^<>]*?\b(href|src|action)\s*=\s*[\"']?([^\"'\s<>]+)", re.IGNORECASE
)
# "[^<>]" and not "[^>]": a run of "<" without ">" must not make the fallback quadratic.
_TAG = re.compile(r"<[^<>]*>")
_WHERE = {"a": "html-a", "area": "html-area", "img": "html-img", "form": "html-form"}


@dataclass(slots=True)
class HtmlDoc:
    """One HTML body taken apart. `links` are (url as found, where, shown) in document order."""

    text: str = ""  # visible text, whitespace not yet collapsed
    links: list[tuple[str, str, str | None]] = field(default_factory=list)
    image_alts: list[str] = field(default_factory=list)
    base: str | None = None
    truncated: bool = False  # more link candidates than `max_links` allowed


def collapse(text: str, limit: int = SHOWN_MAX) -> str:
    return _SPACES.sub(" ", text).strip()[:limit]


def _attr(el: lxml.etree._Element, name: str) -> str | None:
    value = el.get(name)
    if value is None:
        return None
    return str(value)


def _hidden(el: lxml.etree._Element) -> bool:
    if el.get("hidden") is not None:
        return True
    style = el.get("style")
    return bool(style) and _HIDDEN_STYLE.search(str(style)) is not None


class _Collector:
    def __init__(self, max_links: int) -> None:
        self.doc = HtmlDoc()
        self.max_links = max_links
        self.chunks: list[str] = []
        self.anchors: list[tuple[lxml.etree._Element, int, str | None]] = []

    def add_link(self, url: str | None, where: str, shown: str | None) -> None:
        if not url or not url.strip():
            return
        if len(self.doc.links) >= self.max_links:
            self.doc.truncated = True
            return
        self.doc.links.append((url, where, shown or None))

    def start(self, el: lxml.etree._Element, tag: str) -> None:
        if tag == "a":
            title = _attr(el, "title")
            self.anchors.append((el, len(self.chunks), title))
        elif tag == "img":
            alt = collapse(_attr(el, "alt") or _attr(el, "title") or "")
            if alt:
                self.doc.image_alts.append(alt)
                if self.anchors:
                    anchor, start, title = self.anchors[-1]
                    self.anchors[-1] = (anchor, start, title or alt)
            self.add_link(_attr(el, "src"), "html-img", alt)
        elif tag == "area":
            self.add_link(_attr(el, "href"), "html-area", collapse(_attr(el, "alt") or ""))
        elif tag == "form":
            self.add_link(_attr(el, "action"), "html-form", None)
        elif tag == "base" and self.doc.base is None:
            self.doc.base = _attr(el, "href")
        elif tag == "meta" and (_attr(el, "http-equiv") or "").strip().lower() == "refresh":
            match = _REFRESH_URL.search(_attr(el, "content") or "")
            if match:
                self.add_link(match.group(1), "html-meta", None)

    def end_anchor(self, el: lxml.etree._Element) -> None:
        while self.anchors:
            anchor, start, fallback = self.anchors.pop()
            if anchor is el:
                shown = collapse("".join(self.chunks[start:])) or collapse(fallback or "")
                self.add_link(_attr(el, "href"), "html-a", shown)
                return


def _walk(root: lxml.etree._Element, max_links: int) -> HtmlDoc:
    col = _Collector(max_links)
    chunks = col.chunks
    hidden = {el for el in _STYLED(root) if _hidden(el)}
    mute = 0  # depth inside elements whose text is not shown
    walker = lxml.etree.iterwalk(root, events=("start", "end"))
    for event, el in walker:
        tag = el.tag
        role = _ROLE.get(tag, 0) if isinstance(tag, str) else _OTHER
        if event == "start":
            if role & _MUTE_SUBTREE or (hidden and el in hidden):
                walker.skip_subtree()
                mute += 1
                continue
            if role:
                if role & _NO_TEXT_ROLE:
                    mute += 1
                if role & _LINK_ROLE:
                    col.start(el, tag)
                if role & _BLOCK_ROLE:
                    chunks.append(" ")
            if not mute and el.text:
                chunks.append(el.text)
            continue
        if role & (_MUTE_SUBTREE | _NO_TEXT_ROLE) or (hidden and el in hidden):
            mute -= 1
        elif tag == "a":
            col.end_anchor(el)
        if role & _BLOCK_ROLE:
            chunks.append(" ")
        if not mute and el.tail:
            chunks.append(el.tail)
    col.doc.text = "".join(chunks)  # whitespace is collapsed once, by the normaliser
    return col.doc


def _fallback(markup: str, max_links: int) -> HtmlDoc:
    col = _Collector(max_links)
    for match in _ATTR_URL.finditer(markup):
        tag = match.group(1).lower()
        col.add_link(htmllib.unescape(match.group(3)), _WHERE[tag], None)
    col.doc.text = collapse(htmllib.unescape(_TAG.sub(" ", markup)), len(markup))
    return col.doc


def analyse_html(markup: str, max_links: int = 500) -> HtmlDoc:
    """Visible text, links and image alts of one HTML body. Never raises."""
    if not markup.strip():
        return HtmlDoc()
    try:
        root = lxml.etree.fromstring(markup.encode("utf-8", "replace"), parser=_PARSER)
        if root is None:
            return _fallback(markup, max_links)
        doc = _walk(root, max_links)
        if not doc.links and not doc.text.strip() and len(markup) > 64:
            return _fallback(markup, max_links)  # deeper than libxml2 goes: read it crudely
        return doc
    except Exception:  # lxml refuses some inputs (empty documents, odd nesting): go crude
        try:
            return _fallback(markup, max_links)
        except Exception:
            return HtmlDoc()
