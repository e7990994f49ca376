"""MindAct's page view: a step's ``cleaned_html`` pruned around a few candidate elements, then
written as the short HTML that AgentBench's Mind2Web prompt shows (and each candidate's first 10
words as its multiple-choice option).

Reimplemented from Mind2Web's ``dom_utils`` (``prune_tree``, ``get_tree_repr`` with
``keep_html_brackets=True``, the setting AgentBench evaluates with) on the standard library's
ElementTree instead of lxml; the serializer writes what lxml writes (``<a/>`` for an element
without text or children, ``<a></a>`` for one whose text is empty). Comments and processing
instructions are dropped on parsing (lxml keeps them; Mind2Web's cleaned HTML has none).

Pruning keeps, for every candidate: the candidate, its ancestors, its first 50 descendants down to
depth 5, and up to 3 non-``text`` siblings on each side; everything else is removed, and a kept
element left with no attributes, no ``text`` child and at most one child is replaced by that child.
Only candidates keep their ``backend_node_id``; the view numbers them 0, 1, ... in document order
(``id=N``) and writes every other attribute as up to 20 words of salient values.
"""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from genpi.errors import GenpiError

NODE_ID = "backend_node_id"
MAX_DEPTH = 5  # descendants kept below a candidate
MAX_CHILDREN = 50  # of those, the first N in document order
MAX_SIBLING = 3  # siblings kept on each side of a candidate
OPTION_WORDS = 10  # words of a candidate's view shown as its option
# The attributes the view keeps, in the order their values are written.
SALIENT = (
    "role", "aria_role", "type", "alt", "aria_description", "aria_label", "label", "title",
    "name", "text_value", "value", "placeholder", "input_checked", "input_value",
    "option_selected", "class",
)  # fmt: skip
UNINFORMATIVE = {"hidden", "none", "presentation", "null", "undefined"}
# Entities written back as characters, in this order (as Mind2Web: "&amp;lt;" ends as "<").
ENTITIES = (
    ("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"), ("&nbsp;", " "),
    ("&ndash;", "-"), ("&rsquo;", "'"), ("&lsquo;", "'"), ("&ldquo;", '"'), ("&rdquo;", '"'),
    ("&#39;", "'"), ("&#40;", "("), ("&#41;", ")"),
)  # fmt: skip
_TEXT_NODE = re.compile(r"<text>(.*?)</text>")


class PageError(GenpiError, ValueError):
    """A step's page that cannot be shown; the message names the step and the fix."""


@dataclass(frozen=True)
class View:
    """A round's page: the pruned HTML, and (backend_node_id, option text) per candidate in
    document order, i.e. options B, C, ... of the multiple choice."""

    html: str
    choices: tuple[tuple[str, str], ...]


def parse(cleaned_html: str) -> ET.Element:
    try:
        return ET.fromstring(cleaned_html)
    except ET.ParseError as exc:
        raise PageError(f"cleaned_html is not well-formed XML ({exc}); check the data") from None


def _descendants(node: ET.Element, max_depth: int, depth: int = 0) -> list[ET.Element]:
    if depth > max_depth:
        return []
    found: list[ET.Element] = []
    for child in node:
        found.append(child)
        found.extend(_descendants(child, max_depth, depth + 1))
    return found


def _find(root: ET.Element, node_id: str) -> ET.Element:
    for node in root.iter():
        if node.get(NODE_ID) == node_id:
            return node
    raise PageError(
        f"candidate {node_id} is not in the step's cleaned_html; the step's candidates and page "
        f"must come from the same Mind2Web record"
    )


def _unwrap(node: ET.Element, parent: ET.Element, parents: dict[ET.Element, ET.Element]) -> None:
    """Put ``node``'s children in its place (lxml's addprevious + remove)."""
    at = list(parent).index(node)
    for child in list(node):
        node.remove(child)
        parent.insert(at, child)
        parents[child] = parent
        at += 1
    parent.remove(node)


def prune(root: ET.Element, candidates: Collection[str]) -> ET.Element:
    """A pruned copy of the page keeping ``candidates`` and their surroundings (module doc)."""
    parents = {child: parent for parent in root.iter() for child in parent}
    keep: set[str] = set()
    for node_id in candidates:
        node = _find(root, node_id)
        keep.add(node_id)
        up = parents.get(node)
        while up is not None:
            keep.add(up.get(NODE_ID, ""))
            up = parents.get(up)
        below = [d.get(NODE_ID, "") for d in _descendants(node, MAX_DEPTH)]
        keep.update(below[:MAX_CHILDREN])
        parent = parents.get(node)
        if parent is not None:
            siblings = [x for x in parent if x.tag != "text"]
            if any(x is node for x in siblings):
                at = next(i for i, x in enumerate(siblings) if x is node)
                window = siblings[max(0, at - MAX_SIBLING) : at + MAX_SIBLING + 1]
                keep.update(x.get(NODE_ID, "") for x in window)
    tree = copy.deepcopy(root)
    parents = {child: parent for parent in tree.iter() for child in parent}
    # Children before parents: a text node is judged by its parent's id before that is dropped.
    for node in reversed(list(tree.iter())):
        parent = parents.get(node)
        owner = parent if node.tag == "text" and parent is not None else node
        node_id = owner.get(NODE_ID, "")
        if node_id not in keep and parent is not None:
            parent.remove(node)
            continue
        if node_id not in candidates or node.tag == "text":
            node.attrib.pop(NODE_ID, None)
        if (
            not node.attrib
            and not any(x.tag == "text" for x in node)
            and parent is not None
            and node.tag != "text"
            and len(node) <= 1
        ):
            _unwrap(node, parent, parents)
    return tree


def _describe(node: ET.Element) -> None:
    """Replace ``node``'s attributes with ``id`` (a candidate's number) and ``meta`` (up to 20
    words of its salient values, each value's first 5 words shorter than 15 characters)."""
    seen: set[str] = set()
    words: list[str] = []
    for name in SALIENT:
        value = node.get(name)
        if value is None:
            continue
        value = value.lower()
        if value in UNINFORMATIVE or value.startswith("http"):
            continue
        value = " ".join([w for w in value.split() if len(w) < 15][:5])
        if value and value not in seen:
            seen.add(value)
            words.extend(value.split())
    number = node.get(NODE_ID, "")
    node.attrib.clear()
    if number:
        node.set("id", number)
    if words:
        node.set("meta", " ".join(words[:20]))


def _escape_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attribute(value: str) -> str:
    value = _escape_text(value).replace('"', "&quot;")
    return value.replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")


def _serialize(node: ET.Element) -> Iterator[str]:
    """As lxml's ``tostring(node, encoding="unicode")``, the node's tail included."""
    attributes = "".join(f' {k}="{_escape_attribute(v)}"' for k, v in node.attrib.items())
    yield f"<{node.tag}{attributes}"
    if node.text is None and len(node) == 0:
        yield "/>"
    else:
        yield ">" + _escape_text(node.text or "")
        for child in node:
            yield from _serialize(child)
        yield f"</{node.tag}>"
    if node.tail:
        yield _escape_text(node.tail)


def render(node: ET.Element, numbers: dict[str, int]) -> str:
    """The view of ``node`` (a copy): candidates numbered through ``numbers`` (extended in
    document order), other attributes as ``meta`` words, ``text`` nodes as their first 20 words."""
    tree = copy.deepcopy(node)
    for element in tree.iter():
        if element.tag == "text":
            element.text = " ".join((element.text or "").split()[:20])
            continue
        if NODE_ID in element.attrib:
            node_id = element.attrib[NODE_ID]
            numbers.setdefault(node_id, len(numbers))
            element.attrib[NODE_ID] = str(numbers[node_id])
        _describe(element)
    out = "".join(_serialize(tree)).replace('"', " ")
    out = out.replace("meta= ", "").replace("id= ", "id=").replace(" >", ">")
    out = _TEXT_NODE.sub(r"\1", out)
    for entity, char in ENTITIES:
        out = out.replace(entity, char)
    return re.sub(r"\s+", " ", out).strip()


def view(root: ET.Element, candidates: Collection[str]) -> View:
    """The page pruned around ``candidates``, and each candidate's option (first 10 words)."""
    tree = prune(root, candidates)
    numbers: dict[str, int] = {}
    html = render(tree, numbers)
    choices = tuple(
        (node.attrib[NODE_ID], " ".join(render(node, numbers).split()[:OPTION_WORDS]))
        for node in tree.iter()
        if NODE_ID in node.attrib
    )
    return View(html=html, choices=choices)
