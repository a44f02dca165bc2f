"""The CSS of an HTML mail, read with tinycss2 and cssselect: which declarations apply to which
element, and the colours and lengths they hold. Used to find text a reader cannot see.

What is supported, on purpose no more than a hidden-text filter needs:
- inline `style` attributes and every `<style>` block, with the usual cascade: `!important`
  first, then inline before stylesheet, then selector specificity, then source order;
- any selector cssselect reads (tag, class, id, descendant, child, sibling, attribute,
  structural pseudo-classes, comma lists); selectors with a pseudo-element (`::before`) are
  passed over, since the text they add is not in the document;
- `@media` and `@supports` blocks: `all`/`screen` without conditions apply as they stand;
  under any other condition only declarations that hide something apply (a rule that hides
  text on some screens counts, one that shows it again on some screens does not);
  `@media print` is passed over;
- colours in every CSS Color 4 syntax tinycss2 reads (names, #rgb[a], #rrggbb[aa], rgb(),
  rgba(), hsl(), hwb(), lab(), lch(), oklab(), oklch(), transparent), compared as people see
  them (CIE Lab distance).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import tinycss2
import tinycss2.color4
from cssselect import HTMLTranslator, SelectorError
from cssselect import parse as parse_selectors
from lxml import etree

log = logging.getLogger(__name__)

# The properties that can make text invisible; every other declaration is ignored.
PROPERTIES = frozenset({
    "display", "visibility", "opacity", "filter", "font-size", "font", "color",
    "-webkit-text-fill-color", "background", "background-color", "background-image",
    "position", "left", "top", "right", "bottom", "margin", "margin-left", "margin-top",
    "text-indent", "clip", "clip-path", "height", "width", "max-height", "max-width",
    "overflow", "overflow-x", "overflow-y", "mso-hide", "transform", "content-visibility",
})  # fmt: skip
MAX_SELECTORS = 2_000  # per message; past it the rest of the stylesheet is not read

_TRANSLATOR = HTMLTranslator()
_PX_PER = {"px": 1.0, "pt": 4 / 3, "pc": 16.0, "in": 96.0, "cm": 96 / 2.54, "mm": 96 / 25.4,
           "q": 96 / 101.6}  # fmt: skip
_FONT_KEYWORDS = {"xx-small": 9.0, "x-small": 10.0, "small": 13.0, "medium": 16.0,
                  "large": 18.0, "x-large": 24.0, "xx-large": 32.0, "xxx-large": 48.0}
ROOT_FONT_PX = 16.0

RGBA = tuple[float, float, float, float]  # sRGB channels 0..1 and alpha 0..1


@dataclass(frozen=True, slots=True)
class Declaration:
    """One property: its name, value as written (lower case), tokens, `!important`."""

    name: str
    value: str
    tokens: tuple[Any, ...]
    important: bool


@dataclass(frozen=True, slots=True)
class StyleRule:
    """One selector of a `<style>` rule with the declarations that matter here."""

    xpath: str
    specificity: tuple[int, int, int]
    order: int
    declarations: tuple[Declaration, ...]
    # What the document must contain for the selector to match anything: tags, classes, ids.
    needs: tuple[frozenset[str], frozenset[str], frozenset[str]] = (
        frozenset(), frozenset(), frozenset())

    def may_match(self, tags: set[str], classes: set[str], ids: set[str]) -> bool:
        """False when an element, class or id the selector names is nowhere in the document."""
        need_tags, need_classes, need_ids = self.needs
        return need_tags <= tags and need_classes <= classes and need_ids <= ids


def declarations(tokens: Iterable[Any] | str) -> list[Declaration]:
    """The declarations of a `style` attribute or a rule's block that name a property in
    `PROPERTIES`; malformed ones are skipped as browsers skip them."""
    found = []
    for item in tinycss2.parse_blocks_contents(tokens, skip_comments=True,
                                               skip_whitespace=True):
        if item.type != "declaration" or item.lower_name not in PROPERTIES:
            continue
        value = tinycss2.serialize(item.value).strip().lower()
        tokens_ = tuple(t for t in item.value if t.type not in ("whitespace", "comment"))
        found.append(Declaration(item.lower_name, value, tokens_, bool(item.important)))
    return found


@lru_cache(maxsize=2048)
def inline_declarations(style: str) -> tuple[Declaration, ...]:
    """`declarations` of a `style` attribute, remembered: the same few styles repeat."""
    return tuple(declarations(style))


@lru_cache(maxsize=64)
def stylesheet_rules(css_texts: tuple[str, ...]) -> tuple[tuple[StyleRule, ...], bool]:
    """Every selector of the given `<style>` texts with its declarations, in source order,
    and whether the selector limit cut the sheet short (remembered: mail from one sender
    or one mail client repeats the same stylesheet)."""
    found_rules, cut = _stylesheet_rules(css_texts)
    return tuple(found_rules), cut


def _stylesheet_rules(css_texts: Iterable[str]) -> tuple[list[StyleRule], bool]:
    rules: list[StyleRule] = []
    for css in css_texts:
        sheet = tinycss2.parse_stylesheet(css, skip_comments=True, skip_whitespace=True)
        for rule, conditional in _qualified_rules(sheet, conditional=False):
            if len(rules) >= MAX_SELECTORS:
                return rules, True
            found = declarations(rule.content)
            if conditional:
                found = [d for d in found if hides_by_itself(d)]
            if found:
                rules.extend(_selector_rules(rule, tuple(found), len(rules)))
    return rules, False


def _qualified_rules(rules: Iterable[Any], conditional: bool) -> Iterator[tuple[Any, bool]]:
    for rule in rules:
        if rule.type == "qualified-rule":
            yield rule, conditional
        elif rule.type == "at-rule" and rule.content is not None:
            keyword = rule.lower_at_keyword
            if keyword not in ("media", "supports", "layer", "container", "document"):
                continue  # @font-face, @keyframes, @page: no element styles
            condition = tinycss2.serialize(rule.prelude).strip().lower()
            if keyword == "media" and _print_only(condition):
                continue
            inner = tinycss2.parse_blocks_contents(rule.content, skip_comments=True,
                                                   skip_whitespace=True)
            unconditional = keyword == "layer" or (
                keyword == "media" and condition in ("", "all", "screen", "only screen"))
            nested = (r for r in inner if r.type in ("qualified-rule", "at-rule"))
            yield from _qualified_rules(nested, conditional or not unconditional)


def _print_only(condition: str) -> bool:
    queries = [q.strip() for q in condition.split(",")]
    return all(q.startswith(("print", "only print", "speech")) for q in queries)


def _selector_rules(
    rule: Any, found: tuple[Declaration, ...], order: int
) -> Iterator[StyleRule]:
    prelude = tinycss2.serialize(rule.prelude).strip()
    try:
        selectors = parse_selectors(prelude)
    except SelectorError:
        return  # a selector we cannot read is one a mail client ignores too
    for selector in selectors:
        if selector.pseudo_element is not None:
            continue
        try:
            xpath = _TRANSLATOR.selector_to_xpath(selector)
        except (SelectorError, ValueError):
            continue
        a, b, c = selector.specificity()
        tags: set[str] = set()
        classes: set[str] = set()
        ids: set[str] = set()
        _needs(selector.parsed_tree, tags, classes, ids)
        yield StyleRule(xpath, (a, b, c), order, found,
                        (frozenset(tags), frozenset(classes), frozenset(ids)))


def _needs(node: Any, tags: set[str], classes: set[str], ids: set[str]) -> None:
    """Collect the tags, classes and ids a parsed selector requires (not those under :not)."""
    kind = type(node).__name__
    if kind == "CombinedSelector":
        _needs(node.selector, tags, classes, ids)
        _needs(node.subselector, tags, classes, ids)
        return
    if kind == "Element":
        if node.element and node.element != "*":
            tags.add(node.element.lower())
        return
    if kind == "Class":
        classes.add(node.class_name)
    elif kind == "Hash":
        ids.add(node.id)
    inner = getattr(node, "selector", None)
    if inner is not None:
        _needs(inner, tags, classes, ids)


def compile_xpath(xpath: str) -> etree.XPath | None:
    """An lxml XPath for a translated selector, or None when lxml refuses it."""
    try:
        return etree.XPath(xpath)
    except etree.XPathSyntaxError:
        return None


# --- values --------------------------------------------------------------------------------


def hides_by_itself(d: Declaration) -> bool:
    """Whether a declaration hides its element whatever else applies (used for rules under
    a media condition, which count only when they hide)."""
    if d.name == "display":
        return d.value == "none"
    if d.name == "visibility":
        return d.value in ("hidden", "collapse")
    if d.name == "content-visibility":
        return d.value == "hidden"
    if d.name == "mso-hide":
        return d.value == "all"
    if d.name == "opacity":
        value = number(d.tokens)
        return value is not None and value <= 0.05
    if d.name in ("font-size", "font"):
        size = font_size(d, ROOT_FONT_PX)
        return size is not None and size < 3.0
    return False


def number(tokens: tuple[Any, ...]) -> float | None:
    """A plain number or percentage as a fraction ("0", "0.5", "50%")."""
    if len(tokens) != 1:
        return None
    token = tokens[0]
    if token.type == "number":
        return float(token.value)
    if token.type == "percentage":
        return float(token.value) / 100
    return None


def length_px(token: Any, font_px: float, percent_of: float | None = None) -> float | None:
    """A length token in CSS pixels; `font_px` resolves em, `percent_of` resolves %."""
    if token.type == "number" and token.value == 0:
        return 0.0
    if token.type == "percentage":
        return None if percent_of is None else float(token.value) / 100 * percent_of
    if token.type != "dimension":
        return None
    unit = token.lower_unit
    if unit in _PX_PER:
        return float(token.value) * _PX_PER[unit]
    if unit in ("em", "ex", "ch"):
        return float(token.value) * font_px * (1.0 if unit == "em" else 0.5)
    if unit == "rem":
        return float(token.value) * ROOT_FONT_PX
    if unit in ("vw", "vh", "vmin", "vmax"):
        return float(token.value) * 6.0  # a 600 px wide mail pane
    return None


def font_size(d: Declaration, parent_px: float) -> float | None:
    """The font size a `font-size` or `font` declaration sets, in px (None: unchanged)."""
    tokens = d.tokens
    if d.name == "font":
        # font: [style weight ...] SIZE[/line-height] FAMILY: the size is the first length
        tokens = tuple(t for t in tokens
                       if t.type in ("dimension", "percentage", "number", "ident"))
        for token in tokens:
            if token.type == "ident" and token.lower_value in _FONT_KEYWORDS:
                return _FONT_KEYWORDS[token.lower_value]
            if token.type in ("dimension", "percentage") or (
                    token.type == "number" and token.value == 0):
                return length_px(token, parent_px, parent_px)
        return None
    if len(tokens) != 1:
        return None
    token = tokens[0]
    if token.type == "ident":
        keyword = token.lower_value
        if keyword in _FONT_KEYWORDS:
            return _FONT_KEYWORDS[keyword]
        if keyword == "smaller":
            return parent_px * 0.83
        if keyword == "larger":
            return parent_px * 1.2
        return None
    return length_px(token, parent_px, parent_px)


def colour(value: str | Any) -> RGBA | str | None:
    """A CSS colour as sRGB + alpha, "currentcolor", or None when it is not a colour."""
    try:
        parsed = tinycss2.color4.parse_color(value)
    except (TypeError, ValueError, ZeroDivisionError, IndexError):
        return None
    if parsed is None:
        return None
    if isinstance(parsed, str):
        return parsed  # "currentcolor"
    return _to_srgb(parsed)


def _to_srgb(parsed: Any) -> RGBA | None:
    space = parsed.space
    try:
        if space in ("hsl", "hwb"):
            parsed = parsed.to("srgb")
        elif space in ("lab", "lch", "oklab", "oklch"):
            lab = parsed.to("lab") if space != "lab" else parsed
            r, g, b = _lab_to_srgb(*(c or 0.0 for c in lab.coordinates))
            return (r, g, b, parsed.alpha)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    # srgb, and the wide-gamut spaces read as if they were sRGB (close enough to compare)
    r, g, b = (min(max(c or 0.0, 0.0), 1.0) for c in parsed.coordinates)
    return (r, g, b, parsed.alpha)


def composite(top: RGBA, below: tuple[float, float, float]) -> tuple[float, float, float]:
    """`top` painted over an opaque `below`."""
    a = top[3]
    return (top[0] * a + below[0] * (1 - a), top[1] * a + below[1] * (1 - a),
            top[2] * a + below[2] * (1 - a))


def difference(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    """How different two sRGB colours look: the CIE76 distance in Lab (about 2.3 is the
    smallest difference people notice; text needs far more to be read)."""
    la, lb = _srgb_to_lab(*a), _srgb_to_lab(*b)
    return float(sum((x - y) ** 2 for x, y in zip(la, lb, strict=True)) ** 0.5)


_D65 = (0.95047, 1.0, 1.08883)


def _linear(c: float) -> float:
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _gamma(c: float) -> float:
    c = min(max(c, 0.0), 1.0)
    return 12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055


@lru_cache(maxsize=1024)
def _srgb_to_lab(r: float, g: float, b: float) -> tuple[float, float, float]:
    r, g, b = _linear(r), _linear(g), _linear(b)
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / _D65[0]
    y = (0.2126 * r + 0.7152 * g + 0.0722 * b) / _D65[1]
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / _D65[2]

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116

    fx, fy, fz = f(x), f(y), f(z)
    return (116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz))


def _lab_to_srgb(lightness: float, a: float, b: float) -> tuple[float, float, float]:
    fy = (lightness + 16) / 116
    fx, fz = fy + a / 500, fy - b / 200

    def f(t: float) -> float:
        return t ** 3 if t > 0.206893 else (t - 16 / 116) / 7.787

    x, y, z = f(fx) * _D65[0], f(fy) * _D65[1], f(fz) * _D65[2]
    r = 3.2406 * x - 1.5372 * y - 0.4986 * z
    g = -0.9689 * x + 1.8758 * y + 0.0415 * z
    bl = 0.0557 * x - 0.2040 * y + 1.0570 * z
    return (_gamma(r), _gamma(g), _gamma(bl))
