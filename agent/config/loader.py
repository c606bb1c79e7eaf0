"""Loading a site file: YAML with the line of every key, ${ENV} substitution, and errors that name the file,
the line, the field path, what was found and what is allowed, all at once."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .schema import SiteFile


class ConfigError(Exception):
    """A site file that cannot be used. ``problems`` holds one line per problem, each naming file, line and field."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__("\n".join(problems))


Loc = tuple[str | int, ...]


def _positions(node: yaml.Node, loc: Loc, out: dict[Loc, int]) -> None:
    out[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = key.value if isinstance(key, yaml.ScalarNode) else str(key.value)
            out[(*loc, k)] = key.start_mark.line + 1
            _positions(value, (*loc, k), out)
            out[(*loc, k)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _positions(item, (*loc, i), out)


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(data: Any, loc: Loc, env: dict[str, str], missing: list[tuple[Loc, str]]) -> Any:
    if isinstance(data, dict):
        return {k: _substitute(v, (*loc, k), env, missing) for k, v in data.items()}
    if isinstance(data, list):
        return [_substitute(v, (*loc, i), env, missing) for i, v in enumerate(data)]
    if isinstance(data, str) and "${" in data:

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            missing.append((loc, name))
            return ""

        return _ENV_RE.sub(repl, data)
    return data


def _fmt_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def _line_of(loc: Loc, lines: dict[Loc, int]) -> int:
    while loc not in lines and loc:
        loc = loc[:-1]
    return lines.get(loc, 1)


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The pydantic model that owns the mapping at ``loc`` (to list its allowed keys)."""
    model: Any = SiteFile
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        model = _unwrap(ann)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(ann: Any) -> Any:
    args = getattr(ann, "__args__", None)
    if args:
        for a in args:
            inner = _unwrap(a)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return ann


def _describe(err: dict[str, Any], loc: Loc) -> str:
    typ = err["type"]
    found = err.get("input")
    if typ == "extra_forbidden":
        key = loc[-1]
        model = _model_at(loc[:-1])
        allowed = sorted(model.model_fields) if model else []
        hint = difflib.get_close_matches(str(key), allowed, n=1)
        msg = f"unknown key {key!r}"
        if hint:
            msg += f"; did you mean {hint[0]!r}?"
        if allowed:
            msg += f" Allowed here: {', '.join(allowed)}"
        return msg
    if typ == "missing":
        return "required field is missing"
    if typ in ("enum", "literal_error"):
        expected = err.get("ctx", {}).get("expected", "")
        return f"found {found!r}; allowed: {expected}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if isinstance(found, dict | list) or repr(found) in msg:
        return msg
    return f"{msg} (found {found!r})"


def _pydantic_loc(raw: tuple[Any, ...]) -> Loc:
    # drop pydantic's union/tag markers such as 'function-after[...]'
    return tuple(p for p in raw if isinstance(p, int) or not ("[" in p and "]" in p))


def load_text(text: str, path: str = "<string>", env: dict[str, str] | None = None) -> SiteFile:
    env = dict(os.environ) if env is None else env
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, [f"{path}:{line}: not valid YAML: {problem}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            path, [f"{path}:1: the site file must be a mapping of sections (site, agent, devices, ...)"]
        )
    lines: dict[Loc, int] = {}
    if node is not None:
        _positions(node, (), lines)
    missing: list[tuple[Loc, str]] = []
    data = _substitute(data, (), env, missing)
    problems = [
        f"{path}:{_line_of(loc, lines)}: {_fmt_loc(loc)}: environment variable {name} is not set; "
        f"export it (or put it in the EnvironmentFile of the service)"
        for loc, name in missing
    ]
    site: SiteFile | None = None
    try:
        site = SiteFile.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = _pydantic_loc(tuple(err["loc"]))
            problems.append(f"{path}:{_line_of(loc, lines)}: {_fmt_loc(loc)}: {_describe(dict(err), loc)}")
    if problems or site is None:
        raise ConfigError(path, problems)
    return site


def load(path: str | Path, env: dict[str, str] | None = None) -> SiteFile:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [f"{p}: cannot read the site file: {exc.strerror}"]) from None
    return load_text(text, str(p), env)
