"""Every setting of :class:`~mirec.config.Config` with its type, default and help, read from
the docstring under each field in ``config.py`` (the one place a setting is described), for
``mirec models --settings`` and ``docs/settings.md``."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from dataclasses import dataclass

from mirec.core.config import Config


@dataclass(frozen=True)
class Setting:
    name: str
    type: str
    default: str
    help: str
    section: str


def settings() -> list[Setting]:
    """The fields of Config in their order, each with the section comment above it
    (``# what to train``, ``# data``, ...) and its docstring ("" when it has none)."""
    source = textwrap.dedent(inspect.getsource(Config))
    lines = source.splitlines()
    body = ast.parse(source).body[0].body  # the class's statements
    docs: dict[str, str] = {}
    sections: dict[str, str] = {}
    section = ""
    previous_end = 0
    for node, following in zip(body, [*body[1:], None], strict=True):
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        for line in lines[previous_end : node.lineno - 1]:
            if line.strip().startswith("# "):
                section = line.strip()[2:]
        previous_end = node.end_lineno or node.lineno
        name = node.target.id
        sections[name] = section
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[name] = " ".join(inspect.cleandoc(following.value.value).split())
            previous_end = following.end_lineno or previous_end
    return [
        Setting(
            f.name,
            str(f.type).replace("typing.", ""),
            repr(f.default),
            docs.get(f.name, ""),
            sections.get(f.name, ""),
        )
        for f in dataclasses.fields(Config)
    ]


def settings_text(width: int = 88) -> str:
    """The settings as plain text, grouped by section."""
    out: list[str] = []
    section = None
    for s in settings():
        if s.section != section:
            section = s.section
            out.append(f"\n{section}:" if section else "")
        out.append(f"  {s.name} ({s.type}, default {s.default})")
        if s.help:
            out.extend(textwrap.wrap(s.help, width, initial_indent="      ",
                                     subsequent_indent="      "))  # fmt: skip
    return "\n".join(out).lstrip("\n") + "\n"


def settings_markdown() -> str:
    """The settings as the Markdown page ``docs/settings.md``."""
    out = [
        "# Settings",
        "",
        "Every setting of a run, as `mirec train --set NAME=VALUE`, a key of a `--config` YAML "
        "file or of a model folder's `config.yaml`. Generated from the code by "
        "`mirec models --settings --markdown` (a test keeps this page equal to it).",
    ]
    section = None
    for s in settings():
        if s.section != section:
            section = s.section
            out += ["", f"## {section[:1].upper()}{section[1:]}", ""]
            out += ["| setting | type | default | what it does |", "| --- | --- | --- | --- |"]
        # a pipe, even inside backticks, would split a Markdown table's cell
        cells = [f"`{s.name}`", f"`{s.type}`", f"`{s.default}`", s.help]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out) + "\n"
