"""Fenced code blocks of the project's Markdown pages, for tests that run what the pages show.

A block is fenced by three or more backticks (or tildes); its info string names the language and
may carry marker words after it: ```` ```python runnable ```` is a Python block marked
``runnable`` (GitHub highlights it as Python and shows no marker). :func:`fenced_blocks` returns a
page's blocks of one language, optionally only those carrying a marker; :func:`script` joins them
into one program, in page order, with a comment naming each block's line, so that a traceback
points back into the page.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, its marker words, its first line of code (1-based) and its code."""

    language: str
    markers: tuple[str, ...]
    line: int
    code: str


def fenced_blocks(path: str | os.PathLike[str], language: str | None = None,
                  marker: str | None = None) -> list[Block]:
    """Return the fenced blocks of the Markdown file ``path``, in order: those of ``language`` (any
    when None) carrying ``marker`` among their info words (any when None). An unclosed block runs
    to the end of the file, as CommonMark reads it."""
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        fence, words = m["fence"], m["info"].split()
        indent = len(m["indent"])
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            end = _FENCE.match(lines[j])
            if end is not None and end["fence"][0] == fence[0] and len(end["fence"]) >= len(fence) \
                    and not end["info"].strip():
                break
            text = lines[j]
            body.append(text[min(indent, len(text) - len(text.lstrip(" "))):])  # the fence's indent removed
            j += 1
        block = Block(language=words[0] if words else "", markers=tuple(words[1:]), line=i + 2,
                      code="\n".join(body) + "\n")
        if (language is None or block.language == language) and (marker is None or marker in block.markers):
            blocks.append(block)
        i = j + 1
    return blocks


def script(path: str | os.PathLike[str], language: str = "python", marker: str | None = "runnable") -> str:
    """Return the blocks of ``path`` of ``language`` carrying ``marker`` as one program (page order),
    each preceded by a comment naming its place in the page; AssertionError when there are none."""
    blocks = fenced_blocks(path, language, marker)
    assert blocks, f"expected {language} blocks marked {marker!r} in {path}, got none"
    return "".join(f"# ---- {os.path.basename(path)}, line {b.line}\n{b.code}" for b in blocks)
