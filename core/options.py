"""Command-line flags declared once, on the config dataclass's fields.

A field declared with ``option(default, help=...)`` becomes one ``--flag``; a plain field stays
off the command line. The flag's type comes from the annotation (int, float, str, bool ->
``--x/--no-x``, ``Literal`` -> choices, ``list``/``tuple`` -> comma-separated, ``dict`` ->
repeatable ``KEY=VALUE``, ``X | None``), and a field whose type is itself a dataclass adds that
class's flags as an argument group (``DatasetSpec``'s ``--data``, ``--text-column``, ...).

``option_values`` reads the parsed namespace back into field values. An unset flag parses to
None (unless the field gives a ``cli_default``) so that a config's ``from_preset``, which drops
None, keeps its preset's value: only the flags the user gave override it. Validation stays in
the config classes (``__post_init__`` raising ``ConfigError``), so the CLI checks nothing twice.

Standard library only: the CLI builds every parser without importing torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

from kdserve.core.errors import ConfigError

#: The key of a field's ``metadata`` that holds its ``Flag``.
METADATA_KEY = "kdserve.option"


@dataclasses.dataclass(frozen=True)
class Flag:
    """How one field appears on the command line."""

    help: str | None = None
    #: the flag, e.g. "--output" for ``output_dir``; default "--" + the field name with dashes
    flag: str | None = None
    #: default: a ``Literal``'s values
    choices: tuple[Any, ...] | None = None
    metavar: str | None = None
    #: None: required when the field has neither a default nor a ``cli_default``
    required: bool | None = None
    #: what an unset flag parses to; None lets the preset or the field default decide
    cli_default: Any = None
    #: append " (default: X)" to the help when ``cli_default`` is set
    show_default: bool = False
    #: bool: one ``--x`` flag that sets True (``--x/--no-x`` otherwise)
    switch: bool = False
    #: bool: one ``--flag`` that sets False, e.g. ``--no-torch`` for ``torch_reference``
    negate: bool = False
    #: a dataclass-typed field: the title of its flags' argument group
    title: str | None = None
    #: a dataclass-typed field: ``Flag`` changes per child field, e.g. {"source": {"help": "..."}}
    nested: Mapping[str, Mapping[str, Any]] | None = None
    #: this word on the command line sets the field to None, e.g. "none" for "skip the long texts"
    none_word: str | None = None
    #: (raw text, flag) -> value, for a format the type alone does not say (e.g. ``shlex.split``);
    #: run when the config is built, so a ConfigError it raises is one line and exit 2
    parse: Callable[[str, str], Any] | None = None
    #: a positional argument (a list: one or more) instead of a --flag
    positional: bool = False
    #: a list field given by repeating the flag (``--teacher A --teacher B``), not comma-separated
    repeat: bool = False


def option(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
    help: str | None = None,  # noqa: A002 - argparse's own name for it
    flag: str | None = None,
    choices: tuple[Any, ...] | None = None,
    metavar: str | None = None,
    required: bool | None = None,
    cli_default: Any = None,
    show_default: bool = False,
    switch: bool = False,
    negate: bool = False,
    title: str | None = None,
    nested: Mapping[str, Mapping[str, Any]] | None = None,
    none_word: str | None = None,
    parse: Callable[[str, str], Any] | None = None,
    positional: bool = False,
    repeat: bool = False,
) -> Any:
    """A dataclass field that is also a command-line flag. ``{default}`` in ``help`` becomes the
    field's default, so a help text cannot drift from the value it names."""
    spec = Flag(
        help,
        flag,
        choices,
        metavar,
        required,
        cli_default,
        show_default,
        switch,
        negate,
        title,
        nested,
        none_word,
        parse,
        positional,
        repeat,
    )
    return dataclasses.field(default=default, default_factory=default_factory, metadata={METADATA_KEY: spec})


def _flag_name(field: dataclasses.Field[Any], spec: Flag) -> str:
    return spec.flag or "--" + field.name.replace("_", "-")


def _dest(field: dataclasses.Field[Any], spec: Flag) -> str:
    if spec.positional:
        return field.name
    # argparse's own rule, so that ``--output`` stays ``args.output`` for code that reads it
    return _flag_name(field, spec).lstrip("-").replace("-", "_")


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) for ``X | None`` / ``Optional[X]`` / ``X``; a field that
    is one item or several (``X | list[X]``, a repeated flag) reads as ``list[X]``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        lists = [a for a in args if typing.get_origin(a) is list]
        if len(args) == 2 and len(lists) == 1 and typing.get_args(lists[0]) == tuple(a for a in args if a not in lists):
            return lists[0], type(None) in typing.get_args(annotation)
        if len(args) != 1:
            raise TypeError(f"an option's type must be one type or that type | None, got {annotation}")
        return args[0], True
    return annotation, False


def _has_default(field: dataclasses.Field[Any]) -> bool:
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def _field_default(field: dataclasses.Field[Any]) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_show(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _options(cls: type[Any]) -> list[tuple[dataclasses.Field[Any], Flag, Any]]:
    """(field, its Flag, its resolved annotation) for every field declared with ``option``."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    return [(f, f.metadata[METADATA_KEY], hints[f.name]) for f in dataclasses.fields(cls) if METADATA_KEY in f.metadata]


def _with_overrides(spec: Flag, changes: Mapping[str, Any] | None) -> Flag:
    return dataclasses.replace(spec, **changes) if changes else spec


#: what ``_read`` returns for a flag given as its ``none_word``: None, but set by the user
_EXPLICIT_NONE = object()


def _comma_list(raw: str, flag: str, kind: Any) -> Any:
    """ "1,8,32" -> [1, 8, 32] for ``list[int]`` (a tuple for ``tuple[int, ...]``); blank parts dropped."""
    item = (typing.get_args(kind) or (str,))[0]
    try:
        items = [item(part.strip()) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{flag} wants comma-separated {item.__name__} values, got {raw!r}") from None
    return tuple(items) if typing.get_origin(kind) is tuple else items


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type[Any],
    *,
    title: str | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    _optional: bool = False,
) -> None:
    """One flag per ``option`` field of ``cls``, in field order; ``title`` puts them in a group.

    ``overrides`` changes a field's ``Flag`` for this parser only (e.g. another help text)."""
    target: Any = parser.add_argument_group(title) if title is not None else parser
    for field, spec, annotation in _options(cls):
        spec = _with_overrides(spec, (overrides or {}).get(field.name))
        kind, optional = _unwrap_optional(annotation)
        if dataclasses.is_dataclass(kind):
            if not isinstance(parser, argparse.ArgumentParser):
                raise TypeError(f"{cls.__name__}.{field.name}: a nested option group needs the parser itself")
            add_options(parser, kind, title=spec.title or field.name, overrides=spec.nested, _optional=optional)
            continue
        kwargs = _argparse_kwargs(field, spec, kind, required_ok=not _optional)
        if spec.positional:
            # argparse names a positional by its dest and refuses required= for it
            del kwargs["dest"], kwargs["default"]
            kwargs.pop("required", None)
            kwargs.update(nargs="+" if typing.get_origin(kind) in (list, tuple) else None)
            target.add_argument(field.name, **kwargs)
        else:
            target.add_argument(_flag_name(field, spec), **kwargs)


def _argparse_kwargs(field: dataclasses.Field[Any], spec: Flag, kind: Any, required_ok: bool) -> dict[str, Any]:
    help_text = spec.help
    if help_text is not None:
        help_text = help_text.replace("{default}", _show(_field_default(field)))
        if spec.show_default and spec.cli_default is not None:
            help_text += f" (default: {_show(spec.cli_default)})"
        help_text = help_text.replace("%", "%%")  # argparse formats help with %
    required = spec.required
    if required is None:
        required = required_ok and not _has_default(field) and spec.cli_default is None
    kwargs: dict[str, Any] = {"dest": _dest(field, spec), "default": spec.cli_default, "help": help_text}
    if required:
        kwargs["required"] = True
    if spec.metavar is not None:
        kwargs["metavar"] = spec.metavar
    origin = typing.get_origin(kind)
    if kind is bool:
        if spec.negate:
            kwargs["action"] = "store_false"
        elif spec.switch:
            kwargs["action"] = "store_true"
        else:
            kwargs["action"] = argparse.BooleanOptionalAction
        kwargs.pop("metavar", None)
        return kwargs
    if origin is Literal:
        kwargs["choices"] = list(spec.choices or typing.get_args(kind))
        return kwargs
    if spec.repeat:
        kwargs["action"] = "append"
    elif spec.parse is not None or spec.none_word is not None or origin in (list, tuple):
        pass  # read as text; converted when the config is built (_read), so a bad value is a ConfigError
    elif origin is dict:
        kwargs["action"] = "append"
        kwargs.setdefault("metavar", "KEY=VALUE")
    elif kind in (int, float):
        kwargs["type"] = kind
    if spec.choices is not None:
        kwargs["choices"] = list(spec.choices)
    return kwargs


def _key_values(pairs: list[str], flag: str) -> dict[str, Any]:
    """["a=1", "b=x"] -> {"a": 1, "b": "x"}: each VALUE read as JSON, else as a string."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} wants KEY=VALUE, got {pair!r}")
        try:
            values[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            values[key.strip()] = raw
    return values


def _read(
    cls: type[Any], args: argparse.Namespace, overrides: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, Any]:
    """{field name: value} for every ``option`` field: None where the flag was not given,
    ``_EXPLICIT_NONE`` where it was given as its ``none_word``."""
    values: dict[str, Any] = {}
    for field, spec, annotation in _options(cls):
        spec = _with_overrides(spec, (overrides or {}).get(field.name))
        kind, optional = _unwrap_optional(annotation)
        if dataclasses.is_dataclass(kind):
            values[field.name] = build_from_args(kind, args, overrides=spec.nested, optional=optional)
            continue
        value = getattr(args, _dest(field, spec), None)
        flag = _flag_name(field, spec)
        if value is None or spec.positional:
            pass
        elif spec.none_word is not None and value == spec.none_word:
            value = _EXPLICIT_NONE
        elif spec.repeat:
            value = spec.parse(value, flag) if spec.parse is not None else list(value)
        elif spec.parse is not None:
            value = spec.parse(value, flag)
        elif typing.get_origin(kind) is dict:
            value = _key_values(value, flag)
        elif typing.get_origin(kind) in (list, tuple):
            value = _comma_list(value, flag, kind)
        elif kind in (int, float) and isinstance(value, str):  # a none_word field reads its text
            try:
                value = kind(value)
            except ValueError:
                raise ConfigError(f"{flag} wants {kind.__name__} or {spec.none_word!r}, got {value!r}") from None
        values[field.name] = value
    return values


def option_values(
    cls: type[Any],
    args: argparse.Namespace,
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """{field name: value} for every ``option`` field of ``cls``, None where the flag was not given
    (for ``from_preset``, which keeps its preset's value where it gets None).

    A dataclass-typed field is built from its own flags; an optional one (``DatasetSpec | None``)
    is None when none of them was given, and a ConfigError when some were but not a required one."""
    return {name: None if v is _EXPLICIT_NONE else v for name, v in _read(cls, args, overrides).items()}


def build_from_args(
    cls: type[Any],
    args: argparse.Namespace,
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    optional: bool = False,
) -> Any:
    """``cls`` built from its flags in ``args``: unset ones keep the field defaults, a ``none_word``
    sets None. With ``optional``, None when none of its flags was given."""
    raw = _read(cls, args, overrides)
    given = {name: None if v is _EXPLICIT_NONE else v for name, v in raw.items() if v is not None}
    options = {f.name: (f, _with_overrides(s, (overrides or {}).get(f.name))) for f, s, _ in _options(cls)}
    missing = [_flag_name(*options[n]) for n in raw if n not in given and not _has_default(options[n][0])]
    if missing:
        if optional and not given:
            return None
        flags = ", ".join(_flag_name(*options[name]) for name in given)
        raise ConfigError(f"{' and '.join(missing)} is required" + (f" with {flags}" if flags else ""))
    return cls(**given)
