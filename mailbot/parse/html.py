"""HTML mail bodies to readable text, without the text a reader cannot see.

Hidden text is how prompt injection hides in email ("ignore previous instructions" in a
white-on-white span), so everything a mail client would not show is removed from the tree
before inscriptis renders it. The styles come from the `style` attributes and the `<style>`
blocks with a real cascade (see `mailbot.parse.css` for what is supported); hidden is:

- `display:none`, `visibility:hidden|collapse` (inherited, so a child may show itself
  again), `opacity` (multiplied down the tree) or `filter:opacity()` at 5 % or less,
  `content-visibility:hidden`, `mso-hide:all`, the `hidden` attribute;
- a font size under 3 px (`0`, `0pt`, `0em`, `1px`, `font: 0/0 a`), computed through
  em and % down the tree;
- text whose colour (or `-webkit-text-fill-color`), after its alpha, looks like the
  background it is drawn on: the nearest background colour of the element or an ancestor
  (`background`, `background-color`, `bgcolor`, white at the root); over a background
  image the colour is not judged;
- boxes moved off screen (absolute/fixed position, margins or `translate()` 500 px or more
  to the left or top; fixed boxes 2000 px away in any direction), `text-indent` of -500 px
  or less, `transform: scale(0)`, `clip: rect()` or `clip-path` that leaves at most 1 px,
  and boxes at most 1 px high or wide (`height`, `width`, `max-height`, `max-width`) with
  `overflow:hidden`;
- `<script>`, `<style>`, `<head>`, `<template>`, `<noscript>`, `<object>`, `<embed>`.

`aria-hidden` alone hides nothing from a sighted reader and is not a reason to drop text;
combined with any of the above, the above decides. How many characters were hidden is
returned so that the parse step can record it for the agent.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import tinycss2
from inscriptis.html_engine import Inscriptis
from inscriptis.model.config import ParserConfig
from lxml import etree
from lxml.html import HtmlElement, document_fromstring

from mailbot.parse import css
from mailbot.parse.css import RGBA, Declaration

_CONFIG = ParserConfig(display_links=False, display_images=False)

_DROP_TAGS = ("script", "style", "head", "title", "template", "noscript", "object", "embed")
_NOT_PROSE = ("script", "style", "head", "title")  # dropped, but not text someone hid
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*>")
_XML_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_TAGS = re.compile(r"<[^>]*>")
_WHITE = (1.0, 1.0, 1.0)
_BLACK: RGBA = (0.0, 0.0, 0.0, 1.0)
_INVISIBLE_DIFFERENCE = 5.0  # CIE76: #f2f2f2 on white is hidden, #eeeeee is faint but read
_TINY_FONT_PX = 3.0
_OFF_SCREEN_PX = -500.0
_FIXED_AWAY_PX = 2000.0
_IMAGES = ("url", "linear-gradient", "radial-gradient", "conic-gradient", "image",
           "repeating-linear-gradient", "repeating-radial-gradient", "image-set", "element")


@dataclass(frozen=True, slots=True)
class HtmlText:
    """An HTML body as text: the text, a defect name or None, and how many characters of
    text were hidden from the reader (whitespace runs counted as one)."""

    text: str
    problem: str | None
    hidden_chars: int


def html_to_text(html: str) -> tuple[str, str | None]:
    """Render an HTML body as plain text; returns the text and a defect name or None."""
    converted = convert_html(html)
    return converted.text, converted.problem


def convert_html(html: str) -> HtmlText:
    """Render an HTML body as plain text without its hidden text, and say how much was hidden."""
    html = _XML_UNSAFE.sub("", _XML_DECL.sub("", html, count=1))
    if not html.strip():
        return HtmlText("", None, 0)
    try:
        tree = document_fromstring(html)
    except (etree.ParserError, etree.XMLSyntaxError, ValueError):
        return HtmlText(_strip_tags(html), "unreadable-html", 0)
    try:
        hidden = drop_invisible(tree)
    except RecursionError:
        return HtmlText(_strip_tags(html), "html-too-deep", 0)
    try:
        # dedent: inscriptis indents everything inside the body's block elements
        return HtmlText(textwrap.dedent(Inscriptis(tree, _CONFIG).get_text()), None, hidden)
    except RecursionError:
        # inscriptis walks the tree recursively; the hidden parts are gone already.
        return HtmlText(tree.text_content(), "html-too-deep", hidden)


def _strip_tags(html: str) -> str:
    """Last resort for HTML lxml cannot read: tags out, nothing hidden can be told apart."""
    html = re.sub(r"(?is)<(script|style|head)\b.*?</\1\s*>", " ", html)
    return _TAGS.sub(" ", html)


@dataclass(frozen=True, slots=True)
class _Inherited:
    """What an element passes down to its children."""

    colour: RGBA
    fill: RGBA | None  # -webkit-text-fill-color, which paints over `colour`
    font_px: float
    invisible: bool  # visibility:hidden or collapse
    backdrop: tuple[float, float, float] | None  # None: an image, colour unknown
    opacity: float


_ROOT = _Inherited(_BLACK, None, css.ROOT_FONT_PX, False, _WHITE, 1.0)


def drop_invisible(tree: HtmlElement) -> int:
    """Remove, in place, the text of `tree` that a mail client would not display; returns
    how many characters of text were hidden."""
    sheets = tuple(s.text or "" for s in tree.iter("style"))
    rules: tuple[css.StyleRule, ...] = ()
    if any(s.strip() for s in sheets):
        rules, _ = css.stylesheet_rules(sheets)
    matched: dict[Any, list[tuple[tuple[int, int, int], int, tuple[Declaration, ...]]]] = {}
    tags: set[str] = set()
    classes: set[str] = set()
    ids: set[str] = set()
    if rules:
        for element in tree.iter():
            if isinstance(element.tag, str):
                tags.add(element.tag)
                classes.update((element.get("class") or "").split())
                if element.get("id"):
                    ids.add(element.get("id"))
    for rule in rules:
        if not rule.may_match(tags, classes, ids):
            continue  # most of a template's rules are for elements this mail lacks
        xpath = _compiled(rule.xpath)
        if xpath is None:
            continue
        for element in xpath(tree):
            matched.setdefault(element, []).append(
                (rule.specificity, rule.order, rule.declarations))
    drops: list[tuple[HtmlElement, bool]] = []
    clears: list[HtmlElement] = []
    stack: list[tuple[HtmlElement, _Inherited]] = [(tree, _ROOT)]
    while stack:
        element, parent = stack.pop()
        tag = element.tag
        if not isinstance(tag, str):
            continue  # comments and processing instructions are not rendered
        if tag in _DROP_TAGS:
            drops.append((element, tag not in _NOT_PROSE))
            continue
        styles = _cascade(element, matched.get(element, ()))
        state = _computed(element, styles, parent)
        if tag not in ("html", "body") and (
            element.get("hidden") is not None or state.opacity <= 0.05
            or _box_hidden(styles, state.font_px)
        ):
            drops.append((element, True))
            continue
        if _text_hidden(state):
            clears.append(element)
        stack.extend((child, state) for child in element)
    hidden = 0
    for element in clears:
        hidden += _visible_length(element.text)
        element.text = None
        for child in element:
            hidden += _visible_length(child.tail)
            child.tail = None
    for element, counted in drops:
        if counted:
            hidden += _visible_length(element.text_content())
        if element.getparent() is None:  # the root itself is hidden: keep nothing
            element.clear()
        else:
            element.drop_tree()
    return hidden


@lru_cache(maxsize=4096)
def _compiled(xpath: str) -> etree.XPath | None:
    # Newsletters and mail clients repeat the same stylesheets; translate each selector once.
    return css.compile_xpath(xpath)


def _visible_length(text: str | None) -> int:
    return len(" ".join(text.split())) if text else 0


def _cascade(
    element: HtmlElement,
    rules: Any,
) -> dict[str, Declaration]:
    """The winning declaration of each property: `!important` first, then inline over
    stylesheet, then specificity, then source order; presentational attributes lose to all."""
    ranked: dict[str, tuple[tuple[Any, ...], Declaration]] = {}

    def offer(d: Declaration, rank: tuple[Any, ...]) -> None:
        held = ranked.get(d.name)
        if held is None or rank >= held[0]:
            ranked[d.name] = (rank, d)

    font_colour = element.get("color") if element.tag == "font" else None
    if font_colour:
        for d in css.declarations(f"color: {font_colour}"):
            offer(d, (False, -1, (0, 0, 0), 0))
    bgcolor = element.get("bgcolor")
    if bgcolor:
        for d in css.declarations(f"background-color: {bgcolor}"):
            offer(d, (False, -1, (0, 0, 0), 0))
    for specificity, order, declarations in rules:
        for d in declarations:
            offer(d, (d.important, 0, specificity, order))
    style = element.get("style")
    if style:
        for index, d in enumerate(css.inline_declarations(style)):
            offer(d, (d.important, 1, (0, 0, 0), index))
    return {name: d for name, (_, d) in ranked.items()}


def _computed(element: HtmlElement, s: dict[str, Declaration], parent: _Inherited) -> _Inherited:
    """The inherited values of an element: its own declarations over its parent's."""
    font_px = parent.font_px
    size = s.get("font-size") or s.get("font")
    if size is not None:
        value = css.font_size(size, parent.font_px)
        if value is not None:
            font_px = value
        elif size.value == "inherit":
            font_px = parent.font_px
    colour = _colour_value(s.get("color"), parent.colour, parent.colour)
    fill = parent.fill
    if "-webkit-text-fill-color" in s:
        fill = _colour_value(s["-webkit-text-fill-color"], colour, parent.fill)
    invisible = parent.invisible
    visibility = s.get("visibility")
    if visibility is not None and visibility.value != "inherit":
        invisible = visibility.value in ("hidden", "collapse")
    opacity = parent.opacity
    if "opacity" in s:
        own = css.number(s["opacity"].tokens)
        opacity *= 1.0 if own is None else max(0.0, min(own, 1.0))
    if "filter" in s:
        opacity *= _filter_opacity(s["filter"])
    return _Inherited(colour, fill, font_px, invisible, _backdrop(s, parent.backdrop), opacity)


def _colour_value(d: Declaration | None, current: RGBA, inherited: Any) -> Any:
    if d is None or d.value in ("inherit", "unset"):
        return inherited
    if d.value == "initial":
        return _BLACK
    value = css.colour(d.tokens[0] if len(d.tokens) == 1 else d.value)
    if value == "currentcolor":
        return current
    return value if isinstance(value, tuple) else inherited


def _backdrop(
    s: dict[str, Declaration], below: tuple[float, float, float] | None
) -> tuple[float, float, float] | None:
    """The colour behind an element's text: its own background painted over its parent's."""
    paint: RGBA | None = None
    image = False
    for name in ("background", "background-color", "background-image"):
        d = s.get(name)
        if d is None:
            continue
        for token in d.tokens:
            if token.type == "url" or (token.type == "function"
                                       and token.lower_name in _IMAGES):
                image = True
            elif name != "background-image":
                value = css.colour(token)
                if isinstance(value, tuple):
                    paint = value
    if image:
        return None
    if paint is None or paint[3] <= 0.0:
        return below
    if below is None:
        return paint[:3] if paint[3] >= 0.95 else None
    return css.composite(paint, below)


def _filter_opacity(d: Declaration) -> float:
    factor = 1.0
    for token in d.tokens:
        if token.type == "function" and token.lower_name == "opacity":
            args = [t for t in token.arguments if t.type in ("number", "percentage")]
            if args:
                value = css.number((args[0],))
                factor *= 1.0 if value is None else max(0.0, min(value, 1.0))
    return factor


def _text_hidden(state: _Inherited) -> bool:
    """Whether the element's own text (not its children's) is invisible."""
    if state.invisible or state.font_px < _TINY_FONT_PX:
        return True
    paint = state.fill if state.fill is not None else state.colour
    alpha = paint[3] * state.opacity
    if alpha <= 0.05:
        return True
    if state.backdrop is None:
        return False
    seen = css.composite((paint[0], paint[1], paint[2], alpha), state.backdrop)
    return css.difference(seen, state.backdrop) < _INVISIBLE_DIFFERENCE


def _box_hidden(s: dict[str, Declaration], font_px: float) -> bool:
    """Whether an element's declarations hide its whole box, children included (visibility,
    opacity and font size are inherited values and judged in `_text_hidden`)."""
    if any(css.hides_by_itself(s[name]) for name in ("display", "content-visibility",
                                                     "mso-hide") if name in s):
        return True
    return (_off_screen(s, font_px) or _scaled_away(s, font_px) or _clipped(s, font_px)
            or _collapsed(s, font_px))


def _px(d: Declaration | None, font_px: float, index: int = 0) -> float | None:
    if d is None:
        return None
    tokens = [t for t in d.tokens if t.type != "literal"]
    if index >= len(tokens):
        return None
    return css.length_px(tokens[index], font_px)


def _off_screen(s: dict[str, Declaration], font_px: float) -> bool:
    position = s["position"].value if "position" in s else "static"
    if position in ("absolute", "fixed"):
        for side in ("left", "top"):
            value = _px(s.get(side), font_px)
            if value is not None and value <= _OFF_SCREEN_PX:
                return True
        if position == "fixed":
            for side in ("left", "top", "right", "bottom"):
                value = _px(s.get(side), font_px)
                if value is not None and abs(value) >= _FIXED_AWAY_PX:
                    return True
    for name in ("margin-left", "margin-top", "text-indent"):
        value = _px(s.get(name), font_px)
        if value is not None and value <= _OFF_SCREEN_PX:
            return True
    margin = s.get("margin")
    if margin is not None:
        sides = [css.length_px(t, font_px) for t in margin.tokens]
        left = sides[3] if len(sides) == 4 else sides[1] if len(sides) >= 2 else None
        top = sides[0] if sides else None
        if any(v is not None and v <= _OFF_SCREEN_PX for v in (top, left)):
            return True
    return False


def _scaled_away(s: dict[str, Declaration], font_px: float) -> bool:
    """`transform: scale(0)` and friends, or a translation off the top or left."""
    d = s.get("transform")
    if d is None:
        return False
    for token in d.tokens:
        if token.type != "function":
            continue
        name = token.lower_name
        args = [t for t in token.arguments if t.type not in ("whitespace", "literal", "comment")]
        numbers = [float(t.value) for t in args if t.type == "number"]
        if name in ("scale", "scalex", "scaley", "scale3d") and numbers and (
                name != "scale3d" and 0.0 in numbers or name == "scale3d"
                and 0.0 in numbers[:2]):
            return True
        if name in ("matrix", "matrix3d") and len(numbers) >= 4 and (
                numbers[0] == 0 and numbers[1] == 0 or numbers[2] == 0 and numbers[3] == 0):
            return True
        if name.startswith("translate"):
            moves = [css.length_px(t, font_px) for t in args]
            if any(m is not None and m <= _OFF_SCREEN_PX for m in moves):
                return True
    return False


def _clipped(s: dict[str, Declaration], font_px: float) -> bool:
    """`clip: rect(...)` or `clip-path` that leaves at most a pixel to see."""
    clip = s.get("clip")
    if clip is not None:
        for token in clip.tokens:
            if token.type == "function" and token.lower_name == "rect":
                edges = [css.length_px(t, font_px) for t in token.arguments
                         if t.type in ("dimension", "number")]
                if len(edges) == 4 and all(e is not None for e in edges):
                    top, right, bottom, left = (float(e or 0) for e in edges)
                    if right - left <= 1 or bottom - top <= 1:
                        return True
    path = s.get("clip-path")
    if path is None:
        return False
    for token in path.tokens:
        if token.type != "function":
            continue
        args = [t for t in token.arguments if t.type not in ("whitespace", "comment")]
        name = token.lower_name
        if name == "inset":
            parts = [t for t in args if t.type in ("percentage", "dimension", "number")]
            percents = [float(t.value) for t in parts if t.type == "percentage"]
            if percents and (max(percents) >= 50 or len(percents) == 4 and (
                    percents[0] + percents[2] >= 100 or percents[1] + percents[3] >= 100)):
                return True
        elif name in ("circle", "ellipse"):
            radii = []
            for t in args:
                if t.type == "ident" and t.lower_value == "at":
                    break
                radii.append(css.length_px(t, font_px, 100.0))
            if radii and all(r is not None and r <= 1 for r in radii):
                return True
        elif name == "polygon":
            points = {p.strip() for p in tinycss2.serialize(token.arguments).split(",")}
            if len(points - {""}) < 3:
                return True
    return False


def _collapsed(s: dict[str, Declaration], font_px: float) -> bool:
    """A box at most a pixel high or wide that hides what overflows it."""
    overflow = {t.lower_value for name in ("overflow", "overflow-x", "overflow-y")
                if name in s for t in s[name].tokens if t.type == "ident"}
    if not overflow & {"hidden", "clip"}:
        return False
    for name in ("height", "max-height", "width", "max-width"):
        value = _px(s.get(name), font_px)
        if value is not None and value <= 1.0:
            return True
    return False
