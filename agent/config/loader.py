"""Loading a site file: YAML with the line of every key, ${ENV} substitution, and errors that name the file,
the line, the field path, what was found and what is allowed, all at once.

Limits, because a site file may come from anywhere (a copy, a generator, a hostile hand): at most
:data:`MAX_FILE_BYTES`, nesting at most :data:`MAX_DEPTH` deep, at most :data:`MAX_ALIASES` alias uses and
:data:`MAX_NODES` nodes once every alias is expanded. Nodes and aliases are counted while the document is
composed (once; the data is then constructed from that same composition; an alias counts as the size of its
anchor), so a "billion laughs" file is refused at the line where the count passes the limit, after reading a
few hundred bytes, instead of being expanded.

What errors show: a found value is shown quoted and cut at :data:`MAX_SHOWN_CHARS`, with the user and
password of any URL in it replaced by ``***``. A value that came from ``${VAR}`` substitution is never shown
(the message names the variable instead), nor the value of a secret field (``writeOnly`` in the schema, or a
key named like a password, secret or token); their text is also scrubbed from every other message. The
value of an unknown key is never shown, only the key.

Top-level keys that start with ``x-`` are left out before validation: a place for YAML anchors that other
sections merge (``<<: *camera``), as in compose files.

Everything here is local to one call (a fresh loader per document), so ``load`` may run in a worker thread.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, NoReturn

import yaml
from pydantic import BaseModel, ValidationError

from pipelines.urls import strip_userinfo

from .schema import SiteFile

#: the largest site file read (bytes of UTF-8)
MAX_FILE_BYTES = 1024 * 1024
#: nodes in the document once aliases are expanded (a site of 1000 cameras with streams is about 10 000;
#: parsing costs some 50 µs of CPU a node in pure-Python YAML, so this bounds a parse to a few seconds)
MAX_NODES = 50_000
#: uses of ``*alias`` (including ``<<: *defaults``) in one document
MAX_ALIASES = 1000
#: nesting of mappings and sequences
MAX_DEPTH = 50
#: the longest found value an error shows
MAX_SHOWN_CHARS = 80


class ConfigError(Exception):
    """A site file that cannot be used. ``problems`` holds one line per problem, each naming file, line and field."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__("\n".join(problems))


Loc = tuple[str | int, ...]


class _TooLarge(yaml.MarkedYAMLError):
    """A document over one of the limits above."""


class _Loader(yaml.SafeLoader):
    """A SafeLoader that counts, while composing, the nodes the document stands for with aliases expanded
    (each node once, each alias as the size of its anchor), and refuses as soon as that passes a limit."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._sizes: dict[int, int] = {}  # id(node) -> nodes it stands for, aliases expanded
        self._total = 0  # nodes so far, aliases expanded: the whole document's size once composed
        self._aliases = 0
        self._depth = 0

    def _count(self, nodes: int, mark: Any) -> None:
        """Refuse as soon as the document stands for more than MAX_NODES nodes, before reading further."""
        self._total += nodes
        if self._total > MAX_NODES:
            if self._aliases:
                raise _TooLarge(
                    problem=f"YAML aliases expand too far (over {MAX_NODES} nodes once expanded; MAX_NODES)",
                    problem_mark=mark,
                )
            raise _TooLarge(problem=f"the document has over {MAX_NODES} nodes (MAX_NODES)", problem_mark=mark)

    def _refuse(self, mark: Any, problem: str) -> NoReturn:
        raise _TooLarge(problem=problem, problem_mark=mark)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:
                self._aliases += 1
                if id(target) not in self._sizes:
                    self._refuse(event.start_mark, f"alias *{event.anchor} is inside its own anchor")
                if self._aliases > MAX_ALIASES:
                    self._refuse(
                        event.start_mark, f"YAML aliases are used more than {MAX_ALIASES} times (MAX_ALIASES)"
                    )
                self._count(self._sizes[id(target)], event.start_mark)
            return super().compose_node(parent, index)
        self._count(1, event.start_mark)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            self._refuse(event.start_mark, f"nested deeper than {MAX_DEPTH} levels (MAX_DEPTH)")
        node = super().compose_node(parent, index)
        self._depth -= 1
        if node is None:
            return None
        size = 1
        if isinstance(node, yaml.SequenceNode):
            size += sum(self._sizes[id(item)] for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            size += sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        self._sizes[id(node)] = size
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # a scalar the resolver typed but its constructor cannot read (2020-13-45, an int of 5000 digits,
        # !!float x) raises ValueError and the like: a located YAML error, not a crash
        try:
            return super().construct_object(node, deep)  # type: ignore[no-untyped-call]
        except (ValueError, TypeError, OverflowError, ArithmeticError, LookupError) as exc:
            raise yaml.constructor.ConstructorError(
                problem=f"cannot read this {node.tag.rsplit(':', 1)[-1]}: {exc}",
                problem_mark=node.start_mark,
            ) from None


def _compose_and_construct(text: str) -> tuple[yaml.Node | None, Any]:
    """Parse once: the node tree (for lines) and the data constructed from that same tree."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()  # type: ignore[no-untyped-call]
        data = None if node is None else loader.construct_document(node)  # type: ignore[no-untyped-call]
        return node, data
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]


def _positions(node: yaml.Node, loc: Loc, out: dict[Loc, int]) -> None:
    out[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = key.value if isinstance(key, yaml.ScalarNode) else f"<{key.tag}>"
            out[(*loc, k)] = key.start_mark.line + 1
            _positions(value, (*loc, k), out)
            out[(*loc, k)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _positions(item, (*loc, i), out)


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_NAME = re.compile(r"(?i)pass|secret|token|credential|private|pwd")


def _write_only_fields(model: type[BaseModel], out: set[str]) -> set[str]:
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("writeOnly"):
            out.add(name)
        inner = _unwrap(field.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel) and inner is not model:
            _write_only_fields(inner, out)
    return out


def _is_secret_key(key: str | int) -> bool:
    """A writeOnly field's name, a near miss of one (``pasword``), or a name that says secret."""
    if not isinstance(key, str):
        return False
    if key in _WRITE_ONLY or _SECRET_NAME.search(key):
        return True
    return bool(difflib.get_close_matches(key.lower(), _WRITE_ONLY, n=1, cutoff=0.75))


class _Secrets:
    """What errors must not show: where substituted values are (and from which variables), and secret texts."""

    def __init__(self) -> None:
        self.from_env: dict[Loc, list[str]] = {}
        self.texts: set[str] = set()

    def hidden(self, loc: Loc) -> str | None:
        """How the value at ``loc`` is named instead of shown, or None when it may be shown."""
        names = self.from_env.get(loc)
        if names:
            return "<the value of " + ", ".join(f"${{{n}}}" for n in names) + ", not shown>"
        if loc and _is_secret_key(loc[-1]):
            return "<a secret, not shown>"
        return None

    def scrub(self, text: str) -> str:
        for secret in sorted(self.texts, key=len, reverse=True):
            text = text.replace(repr(secret), "<hidden>")
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        return strip_userinfo(text)


def _substitute(
    data: Any,
    loc: Loc,
    env: dict[str, str],
    missing: list[tuple[Loc, str]],
    secrets: _Secrets,
    secret: bool = False,
) -> Any:
    """``data`` with ${VAR} replaced; notes in ``secrets`` what came from the environment or sits under a
    secret key (``secret``: an enclosing key is one)."""
    secret = secret or bool(loc and _is_secret_key(loc[-1]))
    if isinstance(data, dict):
        return {k: _substitute(v, (*loc, k), env, missing, secrets, secret) for k, v in data.items()}
    if isinstance(data, list):
        return [_substitute(v, (*loc, i), env, missing, secrets, secret) for i, v in enumerate(data)]
    if secret and isinstance(data, int | float) and not isinstance(data, bool):
        secrets.texts.add(str(data))
    if isinstance(data, str) and "${" not in data and secret:
        secrets.texts.add(data)
    if isinstance(data, str) and "${" in data:
        names: list[str] = []

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            names.append(name)
            if name in env:
                value = env[name]
            elif default is not None:
                value = default
            else:
                missing.append((loc, name))
                value = ""
            if value:
                secrets.texts.add(value)
            return value

        out = _ENV_RE.sub(repl, data)
        if names:
            secrets.from_env[loc] = names
        if names or secret:
            secrets.texts.add(out)
        return out
    return data


def _show(value: Any, secrets: _Secrets | None = None) -> str:
    """``value`` quoted for an error: secrets and URL credentials replaced, cut at MAX_SHOWN_CHARS."""
    text = repr(value)
    text = secrets.scrub(text) if secrets is not None else strip_userinfo(text)
    if len(text) > MAX_SHOWN_CHARS:
        return f"{text[:MAX_SHOWN_CHARS]}... ({len(text)} characters)"
    return text


def _fmt_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if len(part) <= MAX_SHOWN_CHARS else part[:MAX_SHOWN_CHARS] + "..."
            out += ("." if out else "") + strip_userinfo(name)
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


def _describe(err: dict[str, Any], loc: Loc, secrets: _Secrets) -> str:
    typ = err["type"]
    found = err.get("input")
    shown = secrets.hidden(loc) or _show(found, secrets)
    if typ == "extra_forbidden" and loc:
        key = loc[-1]
        model = _model_at(loc[:-1])
        allowed = sorted(model.model_fields) if model else []
        hint = difflib.get_close_matches(str(key), allowed, n=1)
        msg = f"unknown key {_show(key)}"
        if hint:
            msg += f"; did you mean {hint[0]!r}?"
        if allowed:
            msg += f" Allowed here: {', '.join(allowed)}"
        return msg
    if typ == "missing":
        return "required field is missing"
    if typ in ("enum", "literal_error"):
        expected = err.get("ctx", {}).get("expected", "")
        return f"found {shown}; allowed: {expected}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if isinstance(found, dict | list):
        return secrets.scrub(msg)
    if repr(found) in msg:  # the message quotes the value: show it as it may be shown, scrub the rest
        return secrets.scrub(msg.replace(repr(found), _FOUND)).replace(_FOUND, shown)
    if shown in msg:
        return secrets.scrub(msg.replace(shown, _FOUND)).replace(_FOUND, shown)
    return f"{secrets.scrub(msg)} (found {shown})"


_FOUND = "\x00found\x00"  # stands for the found value while a message is scrubbed


_PYDANTIC_MARKER = re.compile(
    r"(function-(after|before|wrap|plain)|union|tagged-union|nullable|json-or-python|chain|lax-or-strict"
    r"|default|model|dataclass|definition-ref|constrained-[a-z]+)\[.*\]"
)


def _pydantic_loc(raw: tuple[Any, ...]) -> Loc:
    # drop pydantic's union/tag markers such as 'function-after[...]' (a user's key 'a[]' stays)
    return tuple(p for p in raw if isinstance(p, int) or not _PYDANTIC_MARKER.fullmatch(str(p)))


def _yaml_problem(path: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else 1
    problem = getattr(exc, "problem", None)
    if isinstance(exc, yaml.reader.ReaderError):
        problem = (
            f"character #x{exc.character:04x} is not allowed in YAML"
            if isinstance(exc.character, int)
            else None
        )
        problem = problem or "bytes that are not text"
        return f"{path}: not valid YAML: {problem} (position {exc.position})"
    text = problem[:200] if problem else "cannot be parsed"
    if isinstance(exc, _TooLarge):
        return f"{path}:{line}: {text}"
    return f"{path}:{line}: not valid YAML: {text}"


def load_text(text: str, path: str = "<string>", env: dict[str, str] | None = None) -> SiteFile:
    """Validate a site file's text; raise :class:`ConfigError` with every problem. Safe in a worker thread."""
    env = dict(os.environ) if env is None else env
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(path, [_too_big(path, len(text))])
    try:
        node, data = _compose_and_construct(text)
    except yaml.YAMLError as exc:
        raise ConfigError(path, [_yaml_problem(path, exc)]) from None
    if data is None or data == {}:
        raise ConfigError(
            path,
            [
                f"{path}:1: the site file is empty (no sections, or only comments); it needs at least "
                "'site:' and the sections this box runs (see configs/site.example.yaml)"
            ],
        )
    if not isinstance(data, dict):
        raise ConfigError(
            path, [f"{path}:1: the site file must be a mapping of sections (site, agent, devices, ...)"]
        )
    # top-level keys x-...: a place for anchors (``x-camera: &camera {...}``), as in compose files
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    lines: dict[Loc, int] = {}
    if node is not None:
        _positions(node, (), lines)
    missing: list[tuple[Loc, str]] = []
    secrets = _Secrets()
    data = _substitute(data, (), env, missing, secrets)
    problems = [
        f"{path}:{_line_of(loc, lines)}: {_fmt_loc(loc)}: environment variable {name} is not set; "
        f"export it (or put it in the EnvironmentFile of the service)"
        for loc, name in missing
    ]
    site: SiteFile | None = None
    try:
        site = SiteFile.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        for err in errors:  # the value of an unknown key may be a secret in the wrong place: never shown
            if err["type"] == "extra_forbidden" and isinstance(err.get("input"), str):
                secrets.texts.add(err["input"])
        for err in errors:
            loc = _pydantic_loc(tuple(err["loc"]))
            problems.append(
                f"{path}:{_line_of(loc, lines)}: {_fmt_loc(loc)}: {_describe(dict(err), loc, secrets)}"
            )
    if problems or site is None:
        raise ConfigError(path, problems)
    return site


def _too_big(path: str, size: int) -> str:
    return (
        f"{path}: the site file is {size} bytes; the limit is {MAX_FILE_BYTES} (MAX_FILE_BYTES); "
        "a site this large belongs in the API"
    )


def load(path: str | Path, env: dict[str, str] | None = None) -> SiteFile:
    """Read and validate a site file; raise :class:`ConfigError` with every problem. Safe in a worker thread."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(p), [f"{p}: cannot read the site file: {exc.strerror}"]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(str(p), [_too_big(str(p), p.stat().st_size)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(p), [f"{p}: the site file is not UTF-8 text (byte {exc.start})"]) from None
    return load_text(text, str(p), env)


_WRITE_ONLY: frozenset[str] = frozenset(_write_only_fields(SiteFile, set()))
