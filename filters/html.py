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
# Attributes that may hide their element, found in C; a Python regex confirms each style (it
# is faster than XPath's case folding).
_STYLE_OR_HIDDEN = lxml.etree.XPath("//@style|//@hidden")
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
_HIDING_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_FONT_SIZE = re.compile(r"font-size\s*:\s*([0-9.]*)", re.IGNORECASE)
_LINK_TAGS = frozenset({"a", "img", "area", "form", "base", "meta"})
# What each tag means to the element-by-element walk, as bit flags: one dict lookup each.
_MUTE_SUBTREE, _NO_TEXT_ROLE, _LINK_ROLE, _BLOCK_ROLE = 1, 2, 4, 8
_ROLE: dict[str, int] = {}
for _tags, _flag in (
    (_SKIP, _MUTE_SUBTREE),
    (_NO_TEXT, _NO_TEXT_ROLE),
    (_LINK_TAGS, _LINK_ROLE),
    (_BLOCK, _BLOCK_ROLE),
):
    for _tag in _tags:
        _ROLE[_tag] = _ROLE.get(_tag, 0) | _flag
# Comments, processing instructions and entity nodes: no text of their own.
_OTHER_NODES = (lxml.etree.Comment, lxml.etree.ProcessingInstruction, lxml.etree.Entity)
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
    return " ".join(text.split())[:limit]


def _attr(el: lxml.etree._Element, name: str) -> str | None:
    value = el.get(name)
    if value is None:
        return None
    return str(value)


class _Collector:
    def __init__(self, max_links: int) -> None:
        self.doc = HtmlDoc()
        self.max_links = max_links
        self.chunks: list[str] = []  # text as shown, for the element-by-element walk
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
            self.anchors.append((el, len(self.chunks), _attr(el, "title")))
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

    def end_anchor(self, el: lxml.etree._Element, text: str | None = None) -> None:
        """text: what the anchor shows, when the walk does not collect chunks."""
        while self.anchors:
            anchor, start, fallback = self.anchors.pop()
            if anchor is el:
                if text is None:
                    text = "".join(self.chunks[start:])
                shown = collapse(text) or collapse(fallback or "")
                self.add_link(_attr(el, "href"), "html-a", shown)
                return


def _text(el: lxml.etree._Element, with_tail: bool) -> str:
    return str(lxml.etree.tostring(el, method="text", encoding=str, with_tail=with_tail))


def _hidden_elements(root: lxml.etree._Element) -> list[lxml.etree._Element]:
    """Elements hidden by a `hidden` attribute or a hiding style. Attribute values come from
    XPath as strings that know their element: only the hidden ones cost an element object.

    `font-size: 0` hides only what does not set a size of its own: mail templates put it on
    table cells to close the gaps between images and buttons whose links and text are shown
    at their own size. Such a cell hides its subtree only when nothing inside resizes."""
    found = []
    zero: list[lxml.etree._Element] = []
    sized = []  # the style strings (XPath results): their elements are fetched only if needed
    for value in _STYLE_OR_HIDDEN(root):
        if value.attrname == "hidden" or _HIDING_STYLE.search(value):
            found.append(value.getparent())
            continue
        sizes = _FONT_SIZE.findall(value)
        if not sizes:
            continue
        last = sizes[-1]  # the last declaration wins, as in CSS
        if last and not last.strip("0."):
            zero.append(value.getparent())
        else:
            sized.append(value)
    if zero:
        resized = _ancestors_of([value.getparent() for value in sized])
        found.extend(el for el in zero if el not in resized)
    return found


def _ancestors_of(elements: list[lxml.etree._Element]) -> set[lxml.etree._Element]:
    """Every ancestor of the given elements; each walk stops where an earlier one passed, so
    the cost is linear in the tree, however deep."""
    seen: set[lxml.etree._Element] = set()
    for el in elements:
        parent = el.getparent()
        while parent is not None and parent not in seen:
            seen.add(parent)
            parent = parent.getparent()
    return seen


def _is_block(el: lxml.etree._Element) -> bool:
    tag = el.tag
    return isinstance(tag, str) and tag in _BLOCK


def _drop(el: lxml.etree._Element) -> None:
    """Remove an element whose content is not shown, leaving what a reader still sees in its
    place: the space a block makes, and its tail."""
    parent = el.getparent()
    if parent is None:
        return
    keep = (" " if _is_block(el) else "") + (el.tail or "")
    if keep:
        prev = el.getprevious()
        if prev is not None:
            prev.tail = (prev.tail or "") + keep
        else:
            parent.text = (parent.text or "") + keep
    parent.remove(el)


def _mute_text(el: lxml.etree._Element) -> None:
    """head and title: their own text and everything inside is not shown; the tail is."""
    el.text = None
    for inner in el.iterdescendants():
        inner.text = None
        inner.tail = None


def _shape_and_read(root: lxml.etree._Element, max_links: int) -> HtmlDoc:
    """Shape the tree into what a reader sees (hidden and non-text subtrees removed, a space
    around each block), so that libxml2 serialises the text; Python only visits the elements
    that carry links. The result is the one an event-by-event walk over all elements gives."""
    col = _Collector(max_links)
    muted = dict.fromkeys(root.iter(_OTHER_NODES, *_SKIP))
    muted.update(dict.fromkeys(_hidden_elements(root)))
    if root in muted:
        col.doc.text = (" " if _is_block(root) else "") + (root.tail or "")
        return col.doc
    for el in root.iter(*_NO_TEXT):
        _mute_text(el)
    for el in muted:
        _drop(el)
    for el in root.iter(*_BLOCK):
        el.text = " " + (el.text or "")
        el.tail = " " + (el.tail or "")
    for event, el in lxml.etree.iterwalk(root, events=("start", "end"), tag=_LINK_TAGS):
        if event == "start":
            col.start(el, el.tag)
        elif el.tag == "a":
            col.end_anchor(el, _text(el, with_tail=False))
    col.doc.text = _text(root, with_tail=True)  # whitespace is collapsed once, by the normaliser
    return col.doc


def _walk_events(root: lxml.etree._Element, max_links: int) -> HtmlDoc:
    """Every element, start and end, in Python: for trees whose text lxml refuses to set back
    (control characters), which _shape_and_read needs."""
    col = _Collector(max_links)
    chunks = col.chunks
    hidden = set(_hidden_elements(root))
    mute = 0  # depth inside elements whose text is not shown
    walker = lxml.etree.iterwalk(root, events=("start", "end"))
    for event, el in walker:
        tag = el.tag
        role = _ROLE.get(tag, 0) if isinstance(tag, str) else _MUTE_SUBTREE
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
    col.doc.text = "".join(chunks)
    return col.doc


def _walk(markup: bytes, max_links: int) -> HtmlDoc | None:
    """None when libxml2 gives no tree."""
    root = lxml.etree.fromstring(markup, parser=_PARSER)
    if root is None:
        return None
    try:
        return _shape_and_read(root, max_links)
    except ValueError:  # text lxml will not write back: parse again and walk the slow way
        root = lxml.etree.fromstring(markup, parser=_PARSER)
        return _walk_events(root, max_links)


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
        doc = _walk(markup.encode("utf-8", "replace"), max_links)
        if doc is None:
            return _fallback(markup, max_links)
        if not doc.links and not doc.text.strip() and len(markup) > 64:
            return _fallback(markup, max_links)  # deeper than libxml2 goes: read it crudely
        return doc
    except Exception:  # lxml refuses some inputs (empty documents, odd nesting): go crude
        try:
            return _fallback(markup, max_links)
        except Exception:
            return HtmlDoc()
