"""A griffe extension for the API reference: Kathikon's docstrings are Google style with a
few reStructuredText habits (they read well in ``help()``); this turns those into Markdown
before mkdocstrings renders them, so the source stays as it is.

- ``:class:`~kathikon.Job```, ``:meth:`insert```, ``:func:`drain_jobs```, … become links to
  the reference entry (resolved from the object's class, then its module, then ``kathikon``;
  a target that is not documented stays plain code).
- A paragraph ending in ``::`` ends in ``:`` (the indented block after it is code already).
- A reST simple table (``=====  =====`` borders) becomes a Markdown table.
- A reST definition (a line that is only ````term````, then an indented description) becomes
  a list item.
- A Google ``Args:`` entry naming several parameters (``a, b, c: text``) is split into one
  entry per parameter.
- A module or class attribute without a docstring but with Sphinx's ``#:`` comment lines
  right above it gets them as its docstring.

mkdocs.yml loads it through mkdocstrings' ``extensions`` option.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(class|meth|func|data|attr|mod|exc|obj):`(~?)\.?([^`]+)`")
TABLE_BORDER = re.compile(r"^( *)(=+)((?: +=+)+) *$")
DEFINITION = re.compile(r"^( *)``([^`]+)``\s*$")
ARGS_HEADER = re.compile(r"^( *)(Args|Arguments|Parameters):\s*$")
MULTI_PARAM = re.compile(r"^( +)([A-Za-z_]\w*(?:, *[A-Za-z_]\w*)+): *(.*)$")


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring of a package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        public = _public_names(pkg)
        for obj in _walk(pkg):
            if obj.docstring is None and obj.is_attribute:
                _comment_docstring(obj)
            if obj.docstring is not None:
                obj.docstring.value = convert(obj.docstring.value, obj, loader, public)


def _walk(obj: griffe.Object) -> list[griffe.Object]:
    found = [obj]
    for member in obj.members.values():
        if member.is_alias:
            continue
        found.extend(_walk(member))  # type: ignore[arg-type]
    return found


def _comment_docstring(attr: griffe.Object) -> None:
    """``#: text`` lines right above the attribute become its docstring."""
    module = attr.module
    if attr.lineno is None or module.filepath is None or isinstance(module.filepath, list):
        return
    try:
        lines = module.lines
    except Exception:
        return
    comment: list[str] = []
    index = attr.lineno - 2
    while 0 <= index < len(lines) and lines[index].strip().startswith("#:"):
        comment.insert(0, lines[index].strip()[2:].strip())
        index -= 1
    if comment:
        attr.docstring = griffe.Docstring(
            "\n".join(comment), lineno=attr.lineno, parent=attr, parser=None
        )


def _public_names(pkg: griffe.Module) -> dict[str, str]:
    """Canonical path → the path the reference pages use (``kathikon.app.Kathikon`` →
    ``kathikon.Kathikon``), for the names the package exports."""
    out: dict[str, str] = {}
    for name, member in pkg.members.items():
        if member.is_alias and not name.startswith("_"):
            try:
                out[member.target_path] = f"{pkg.path}.{name}"  # type: ignore[union-attr]
            except Exception:
                continue
    return out


def _lookup(loader: griffe.GriffeLoader, path: str) -> griffe.Object | None:
    try:
        found = loader.modules_collection[path]
    except Exception:
        return None
    if found.is_alias:
        try:
            return found.final_target  # type: ignore[no-any-return,union-attr]
        except Exception:
            return None
    return found  # type: ignore[no-any-return]


def _identifier(
    target: str, obj: griffe.Object, loader: griffe.GriffeLoader, public: dict[str, str]
) -> str | None:
    scopes = []
    context: griffe.Object | None = obj
    while context is not None:
        scopes.append(context.path)
        context = context.parent
    candidates = [target] if target.startswith("kathikon") else []
    candidates += [f"{scope}.{target}" for scope in scopes]
    for candidate in candidates:
        found = _lookup(loader, candidate)
        if found is None:
            continue
        path = found.path
        for canonical, shown in sorted(public.items(), key=lambda kv: -len(kv[0])):
            if path == canonical or path.startswith(canonical + "."):
                return shown + path[len(canonical) :]
        return path
    return None


def convert(
    text: str, obj: griffe.Object, loader: griffe.GriffeLoader, public: dict[str, str]
) -> str:
    text = _tables(text)
    text = _definitions(text)
    text = _multi_params(text)
    text = re.sub(r"(\S)::$", r"\1:", text, flags=re.M)
    text = re.sub(r"^\s*::$", "", text, flags=re.M)

    def role(match: re.Match[str]) -> str:
        kind, tilde, target = match.groups()
        shown = target.rsplit(".", 1)[-1] if tilde else target
        if kind in ("meth", "func"):
            shown += "()"
        identifier = _identifier(target, obj, loader, public)
        code = f"<code>{shown}</code>"
        if identifier is None:
            return f"`{shown}`"
        return f'<autoref identifier="{identifier}" optional>{code}</autoref>'

    return ROLE.sub(role, text)


def _tables(text: str) -> str:
    """reST simple tables (one header row) → Markdown tables."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        border = TABLE_BORDER.match(lines[i])
        if not border or i + 2 >= len(lines) or lines[i + 2].strip() != lines[i].strip():
            out.append(lines[i])
            i += 1
            continue
        starts = [m.start() for m in re.finditer(r"=+", lines[i])]
        rows: list[list[str]] = []
        j = i + 1
        while j < len(lines) and not (j > i + 2 and TABLE_BORDER.match(lines[j])):
            if not TABLE_BORDER.match(lines[j]):
                line = lines[j]
                cells = [
                    line[start : (starts[k + 1] if k + 1 < len(starts) else None)].strip()
                    for k, start in enumerate(starts)
                ]
                rows.append([c or " " for c in cells])
            j += 1
        out.append("| " + " | ".join(rows[0]) + " |")
        out.append("|" + "---|" * len(starts))
        out.extend("| " + " | ".join(row) + " |" for row in rows[1:])
        i = j + 1
    return "\n".join(out)


def _definitions(text: str) -> str:
    """``term`` + indented description → ``- ``term``: description``."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        term = DEFINITION.match(lines[i])
        indent = len(term.group(1)) if term else 0
        body: list[str] = []
        j = i + 1
        while term and j < len(lines) and lines[j].startswith(" " * (indent + 4)):
            body.append(lines[j].strip())
            j += 1
        if term and body:
            out.append(f"{' ' * indent}- ``{term.group(2)}``: {' '.join(body)}")
            i = j
        else:
            out.append(lines[i])
            i += 1
    return "\n".join(out)


def _multi_params(text: str) -> str:
    """In an ``Args:`` section, ``a, b: text`` → ``a: text`` and ``b: text``."""
    lines = text.split("\n")
    out: list[str] = []
    in_args = False
    for line in lines:
        header = ARGS_HEADER.match(line)
        if header:
            in_args = True
            out.append(line)
            continue
        if in_args and line.strip() and not line.startswith(" "):
            in_args = False
        multi = MULTI_PARAM.match(line) if in_args else None
        if multi:
            indent, names, rest = multi.groups()
            out.extend(f"{indent}{name.strip()}: {rest}" for name in names.split(","))
        else:
            out.append(line)
    return "\n".join(out)
