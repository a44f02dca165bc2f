"""HTML mail bodies to readable text, without the text a reader cannot see.

Hidden text is how prompt injection hides in email ("ignore previous instructions" in a
white-on-white span), so everything a mail client would not show is removed from the tree
before inscriptis renders it: display:none, visibility:hidden, zero or 1px fonts, zero
opacity, collapsed boxes, text coloured like its background, the `hidden` attribute, and
elements matched by simple hiding rules in <style> blocks.
"""

from __future__ import annotations

import re
import textwrap

from inscriptis.html_engine import Inscriptis
from inscriptis.model.config import ParserConfig
from lxml import etree
from lxml.html import HtmlElement, document_fromstring

_CONFIG = ParserConfig(display_links=False, display_images=False)

_DROP_TAGS = ("script", "style", "head", "title", "template", "noscript", "object", "embed")
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*>")
_XML_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_TAGS = re.compile(r"<[^>]*>")
_MEDIA_BLOCK = re.compile(r"@media[^{]*\{(?:[^{}]*\{[^{}]*\})*[^{}]*\}", re.IGNORECASE)
_CSS_RULE = re.compile(r"([^{}]+)\{([^{}]*)\}")
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_SIMPLE_SELECTOR = re.compile(r"^([a-z][a-z0-9]*)?(?:([.#])([\w-]+))?$", re.IGNORECASE)
_LENGTH = re.compile(r"^(-?[\d.]+)\s*(px|pt|em|rem|%|)$")
_HEX = re.compile(r"^#([0-9a-f]{3}|[0-9a-f]{6}|[0-9a-f]{8})$")
_RGB = re.compile(
    r"^rgba?\(\s*([\d.]+)%?\s*[, ]\s*([\d.]+)%?\s*[, ]\s*([\d.]+)%?\s*(?:[,/]\s*([\d.]+%?))?\s*\)$"
)
_BG_COLOR_TOKEN = re.compile(r"(#[0-9a-f]{3,8}\b|rgba?\([^)]*\)|\b[a-z]+\b)")
_NAMED = {
    "white": (255, 255, 255), "black": (0, 0, 0), "red": (255, 0, 0), "green": (0, 128, 0),
    "blue": (0, 0, 255), "yellow": (255, 255, 0), "gray": (128, 128, 128),
    "grey": (128, 128, 128), "silver": (192, 192, 192), "whitesmoke": (245, 245, 245),
    "snow": (255, 250, 250), "ivory": (255, 255, 240), "ghostwhite": (248, 248, 255),
    "navy": (0, 0, 128), "orange": (255, 165, 0),
}  # fmt: skip
_WHITE = (255, 255, 255)
_MAX_STYLE_RULES = 200
_MAX_STYLED = 20_000


def html_to_text(html: str) -> tuple[str, str | None]:
    """Render an HTML body as plain text; returns the text and a defect name or None."""
    html = _XML_UNSAFE.sub("", _XML_DECL.sub("", html, count=1))
    if not html.strip():
        return "", None
    try:
        tree = document_fromstring(html)
    except (etree.ParserError, etree.XMLSyntaxError, ValueError):
        return _strip_tags(html), "unreadable-html"
    try:
        drop_invisible(tree)
    except RecursionError:
        return _strip_tags(html), "html-too-deep"
    try:
        # dedent: inscriptis indents everything inside the body's block elements
        return textwrap.dedent(Inscriptis(tree, _CONFIG).get_text()), None
    except RecursionError:
        # inscriptis walks the tree recursively; the hidden parts are gone already.
        return tree.text_content(), "html-too-deep"


def _strip_tags(html: str) -> str:
    """Last resort for HTML lxml cannot read: tags out, nothing hidden can be told apart."""
    html = re.sub(r"(?is)<(script|style|head)\b.*?</\1\s*>", " ", html)
    return _TAGS.sub(" ", html)


def drop_invisible(tree: HtmlElement) -> None:
    """Remove, in place, the elements of `tree` that a mail client would not display."""
    doomed: list[HtmlElement] = []
    for tag in _DROP_TAGS:
        doomed.extend(tree.iter(tag))
    doomed.extend(tree.xpath("//*[@hidden]"))
    doomed.extend(_styled_hidden(tree))
    doomed.extend(_stylesheet_hidden(tree))
    for element in doomed:
        if element.getparent() is None:  # the root itself is hidden: keep nothing
            element.clear()
        else:
            element.drop_tree()


def _styled_hidden(tree: HtmlElement) -> list[HtmlElement]:
    found = []
    backgrounds: dict[HtmlElement, tuple[float, ...]] = {}
    for element in tree.xpath("//*[@style] | //font[@color]")[:_MAX_STYLED]:
        declarations = parse_style(element.get("style", ""))
        if element.tag == "font" and element.get("color"):
            declarations.setdefault("color", element.get("color", "").lower())
        if declarations and (
            _hides(declarations) or _same_colour_as_background(element, declarations, backgrounds)
        ):
            found.append(element)
    return found


def parse_style(style: str) -> dict[str, str]:
    """`"Color: #FFF; font-size:0 !important"` -> `{"color": "#fff", "font-size": "0"}`."""
    declarations = {}
    for item in style.lower().split(";"):
        key, sep, value = item.partition(":")
        if sep:
            declarations[key.strip()] = value.replace("!important", "").strip()
    return declarations


def _hides(d: dict[str, str]) -> bool:
    """Whether these declarations make an element's text invisible by themselves."""
    if d.get("display") == "none" or d.get("visibility") in ("hidden", "collapse"):
        return True
    if d.get("mso-hide") == "all":
        return True
    if _tiny(d.get("font-size"), 1.0) or _tiny(d.get("opacity"), 0.05):
        return True
    colour = _rgba(d.get("color", ""))
    if colour is not None and len(colour) == 4 and colour[3] < 0.05:  # transparent text
        return True
    # A collapsed box, the usual way to hide pre-header text from the reader.
    return d.get("overflow") == "hidden" and any(
        _tiny(d.get(key), 1.0) for key in ("max-height", "height", "max-width", "width")
    )


def _tiny(value: str | None, limit: float) -> bool:
    """A CSS length or number at most `limit` (px/pt/plain numbers; em scaled by 16)."""
    if not value:
        return False
    match = _LENGTH.match(value.strip())
    if not match:
        return False
    try:
        number = float(match.group(1))
    except ValueError:
        return False
    unit = match.group(2)
    if unit in ("em", "rem"):
        number *= 16
    elif unit == "%":
        number = number / 100 * 16 if limit >= 1 else number / 100
    return number <= limit


def _rgba(value: str) -> tuple[float, ...] | None:
    """A CSS colour as (r, g, b) or (r, g, b, alpha), or None when not understood."""
    value = value.strip()
    if not value:
        return None
    if value == "transparent":
        return (0, 0, 0, 0.0)
    if value in _NAMED:
        return _NAMED[value]
    match = _HEX.match(value)
    if match:
        digits = match.group(1)
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        rgb = tuple(int(digits[i : i + 2], 16) for i in (0, 2, 4))
        if len(digits) == 8:
            return (*rgb, int(digits[6:8], 16) / 255)
        return rgb
    match = _RGB.match(value)
    if match:
        r, g, b, alpha = match.groups()
        channels = tuple(min(float(c), 255.0) for c in (r, g, b))
        if alpha is None:
            return channels
        a = float(alpha.rstrip("%")) / (100 if alpha.endswith("%") else 1)
        return (*channels, a)
    return None


def _declared_background(node: HtmlElement) -> tuple[float, ...] | None:
    """The background colour an element itself declares, if any."""
    style = node.get("style")
    if style and "background" in style.lower():
        declarations = parse_style(style)
        for key in ("background-color", "background"):
            for token in _BG_COLOR_TOKEN.findall(declarations.get(key, "")):
                colour = _rgba(token)
                if colour is not None and not (len(colour) == 4 and colour[3] < 0.5):
                    return colour[:3]
    bgcolor = node.get("bgcolor")
    colour = _rgba(bgcolor.lower()) if bgcolor else None
    return colour[:3] if colour is not None else None


def _background(
    element: HtmlElement, known: dict[HtmlElement, tuple[float, ...]]
) -> tuple[float, ...]:
    """The background an element is drawn on: its own or the nearest ancestor's, else white.

    `known` memoises the answer per element, since styled elements share their ancestors.
    """
    path: list[HtmlElement] = []
    node: HtmlElement | None = element
    colour: tuple[float, ...] | None = None
    while node is not None:
        if node in known:
            colour = known[node]
            break
        path.append(node)
        colour = _declared_background(node)
        if colour is not None:
            break
        node = node.getparent()
    colour = colour if colour is not None else _WHITE
    for walked in path:
        known[walked] = colour
    return colour


def _same_colour_as_background(
    element: HtmlElement, d: dict[str, str], known: dict[HtmlElement, tuple[float, ...]]
) -> bool:
    colour = _rgba(d.get("color", ""))
    if colour is None:
        return False
    background = _background(element, known)
    return sum(abs(a - b) for a, b in zip(colour[:3], background, strict=True)) <= 30


def _stylesheet_hidden(tree: HtmlElement) -> list[HtmlElement]:
    """Elements hidden by simple rules (`.x`, `#y`, `span.z`) in the message's <style>."""
    found: list[HtmlElement] = []
    rules = 0
    for style in tree.iter("style"):
        css = _MEDIA_BLOCK.sub(" ", _CSS_COMMENT.sub(" ", style.text or ""))
        for selectors, body in _CSS_RULE.findall(css):
            rules += 1
            if rules > _MAX_STYLE_RULES:
                return found
            declarations = parse_style(body)
            if not _hides(declarations):
                continue
            for selector in selectors.split(","):
                xpath = _selector_xpath(selector.strip())
                if xpath:
                    found.extend(tree.xpath(xpath))
    return found


def _selector_xpath(selector: str) -> str | None:
    match = _SIMPLE_SELECTOR.match(selector)
    if not match or not (match.group(1) or match.group(3)):
        return None
    tag, kind, name = match.groups()
    path = f"//{tag.lower() if tag else '*'}"
    if kind == ".":
        path += f"[contains(concat(' ', normalize-space(@class), ' '), ' {name} ')]"
    elif kind == "#":
        path += f"[@id='{name}']"
    elif tag and tag.lower() in ("html", "body"):
        return None  # "body {display:none}" is a pre-header trick we do not honour
    return path
