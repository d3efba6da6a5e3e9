"""Griffe extension for the API reference: show a module docstring's command synopsis as code.

``medunlearn_monai.cli``'s docstring lists the command lines (``medunlearn run BUNDLE WORKFLOW [--strategy NAME]
[--multi_gpu] ...``) as plain text. Rendered as Markdown, ``[a] [b]`` reads as a reference link and the brackets
vanish, so a block of lines that starts with ``medunlearn `` (with its indented continuation lines) is fenced as text.
Nothing else is changed.
"""

from __future__ import annotations

from typing import Any

import griffe

COMMAND = "medunlearn "


def fence_synopsis(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    index = 0
    while index < len(lines):
        if not lines[index].startswith(COMMAND):
            out.append(lines[index])
            index += 1
            continue
        block = []
        while index < len(lines) and (lines[index].startswith(COMMAND) or lines[index].startswith((" ", "\t"))):
            block.append(lines[index])
            index += 1
        out += ["```text", *block, "```"]
    return "\n".join(out)


class CommandSynopsis(griffe.Extension):
    def on_module_members(self, *, mod: griffe.Module, **kwargs: Any) -> None:
        if mod.docstring is not None and COMMAND in mod.docstring.value:
            mod.docstring.value = fence_synopsis(mod.docstring.value)
