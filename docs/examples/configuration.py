"""The configuration reference (docs/guides/configuration.md) lists every setting with its
true default: this checks its tables against the signatures and the command line."""

from __future__ import annotations

import ast
import inspect
import logging
import os
import re
from pathlib import Path

import click

import kathikon
from kathikon import cli, testing
from kathikon.config import DEFAULT_QUEUES, Config

PAGE = Path(os.environ["EXAMPLES"]).parent / "guides" / "configuration.md"
text = PAGE.read_text()


def table(heading: str) -> dict[str, str]:
    """The first table under ``heading``: first column (code) → second column."""
    section = text[text.index(heading) :]
    rows: dict[str, str] = {}
    for line in section.splitlines()[1:]:
        if line.startswith("## "):
            break
        m = re.match(r"\| `([^`]+)` \| ([^|]+) \|", line)
        if m:
            rows[m.group(1)] = m.group(2).strip()
        elif rows and not line.startswith("|"):
            break
    assert rows, heading
    return rows


def code(value: str) -> str:
    m = re.fullmatch(r"`([^`]+)`(\W.*)?", value)
    assert m, value
    return m.group(1)


def same(documented: str, actual: object) -> bool:
    return bool(eval(documented) == actual)


# The app: every parameter of Kathikon(), and nothing else, with its default.
app_rows = table("## The app")
params = inspect.signature(kathikon.Kathikon.__init__).parameters
names = [n for n in params if n != "self"]
assert list(app_rows) == names, (list(app_rows), names)
for name in names:
    default = params[name].default
    if name == "queues":
        assert default is None
        default = DEFAULT_QUEUES
    assert same(code(app_rows[name]), default), (name, app_rows[name], default)
# ... and the signature shown above the table.
shown = re.search(r"```python\n(kathikon\.Kathikon\(.*?\))\n```", text, re.S)
assert shown
parts = []
for name in names:
    if params[name].kind is params[name].KEYWORD_ONLY and "*" not in parts:
        parts.append("*")
    parts.append(f"{name}={params[name].default!r}".replace("'", '"'))
expected = "kathikon.Kathikon(" + ", ".join(parts) + ")"
assert re.sub(r"\s+", "", shown.group(1)).replace("_", "") == re.sub(r"\s+", "", expected).replace(
    "_", ""
), (shown.group(1), expected)
# The Config dataclass holds the same defaults.
config = kathikon.Kathikon(path=None).config
assert config == Config(), config
for field in ("max_attempts", "poll_interval", "scheduler_interval", "prune_interval"):
    assert same(code(app_rows[field]), getattr(config, field))

# Workers: every keyword of @app.worker, with its default, and the Worker class attributes.
worker_rows = table("## Workers")
params = inspect.signature(kathikon.Kathikon.worker).parameters
keywords = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY]
assert list(worker_rows) == keywords, (list(worker_rows), keywords)
for name in keywords:
    assert same(code(worker_rows[name]), params[name].default), name
    if name != "backoff":
        assert same(code(worker_rows[name]), getattr(kathikon.Worker, name)), name

# Jobs: every option of insert (its named parameters, and the keys of the JobOptions it takes
# as **options).
job_rows = table("## Jobs")
params = inspect.signature(kathikon.Kathikon.insert).parameters
assert params["options"].kind is inspect.Parameter.VAR_KEYWORD, params
job_options = kathikon.options.JobOptions
options = [n for n in params if n not in ("self", "worker", "options")]
options += list(job_options.__required_keys__ | job_options.__optional_keys__)
assert sorted(job_rows) == sorted(options), (sorted(job_rows), sorted(options))

# Running: the defaults shown are the signatures'.
run_rows = table("## Running")
for call in run_rows:
    m = re.fullmatch(r"(app|telemetry)\.(\w+)\((.*)\)(?:, .*)?", call)
    assert m, call
    owner = kathikon.Kathikon if m.group(1) == "app" else kathikon.telemetry
    signature = inspect.signature(getattr(owner, m.group(2))).parameters
    documented_call = ast.parse("f(" + m.group(3).replace("*, ", "") + ")").body[0]
    assert isinstance(documented_call, ast.Expr) and isinstance(documented_call.value, ast.Call)
    # `**name` in the documented call stands for the signature's `**name` (arg None in the AST).
    documented_names = [
        k.arg or f"**{ast.unparse(k.value)}" for k in documented_call.value.keywords
    ]
    signature_names = [
        f"**{n}" if p.kind is inspect.Parameter.VAR_KEYWORD else n
        for n, p in signature.items()
        if n != "self"
    ]
    assert documented_names == signature_names, (call, documented_names)
    for keyword in documented_call.value.keywords:
        if keyword.arg is None:
            continue
        value = eval(ast.unparse(keyword.value), {"logging": logging})
        assert value == signature[str(keyword.arg)].default, (call, keyword.arg)

# The command line's defaults.
cli_rows = table("## The command line")
for option, documented in cli_rows.items():
    m = re.fullmatch(r"kathikon (\w+) (--[\w-]+) \S+", option)
    assert m, option
    command = cli.cli.commands[m.group(1)]
    param = next(p for p in command.params if m.group(2) in p.opts)
    assert isinstance(param, click.Option)
    value = documented.split(":")[0].strip()
    if value.startswith("`"):
        expected = code(value)
        if expected.replace(".", "").isdigit():
            assert float(str(param.default)) == float(expected), (option, param.default)
        else:
            assert param.default == expected, (option, param.default)
    else:
        assert param.default is None or "UNSET" in repr(param.default), (option, param.default)

# The pytest fixture's app.
app = testing.make_app()
assert app.path is None and app.now() is not None
app.close()
print("configuration.md matches the code")
