"""The one config machinery behind every section dataclass: plain dict <-> dataclass, checked by the annotations.

A section is a plain dataclass. Its field annotations are the schema: ``int``, ``float``, ``bool``, ``str``,
tuples, ``X | None`` and ``Literal[...]`` for choice fields (the allowed values live only in the annotation, read
with ``typing.get_args``). :func:`merge_dict` applies a partial nested dict to a dataclass with those checks and
errors that name the key, the value and what was expected; :func:`config_to_dict` is its inverse. Ranges a type
cannot say (``lr > 0``) are checked by the section's own ``__post_init__``, which :func:`merge_dict` runs through
``dataclasses.replace``.

Torch-free and YAML-free, so the model, export and runtime sides can read configs stored in checkpoints without
the training package; presets, YAML files and ``key=value`` overrides are :mod:`boxseg.train.config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem: unknown preset or key, wrong type, unreadable YAML."""


def merge_dict(cfg: T, data: dict[str, Any], source: str, prefix: str = "") -> T:
    """Return a copy of dataclass ``cfg`` with the (partial, nested) dict ``data`` applied, type-checked.

    ``source`` (a file, an override, a checkpoint) and ``prefix`` (the section's dotted path) name where a bad key or
    value came from. An unknown key suggests the closest valid one. A section may declare ``KEY_ALIASES`` (a
    ClassVar mapping an accepted spelling to the field's name, e.g. ``lambda`` -> ``lambda_``).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}")
    hints = _type_hints(type(cfg))
    fields = {f.name for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    updates: dict[str, Any] = {}
    for name, value in _resolve_aliases(type(cfg), data, source, prefix).items():
        path = f"{prefix}{name}"
        if name not in fields:
            raise ConfigError(f"{source}: unknown key '{path}'{_suggest(str(name), fields, prefix)}")
        current = getattr(cfg, name)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            updates[name] = merge_dict(current, value, source, prefix=f"{path}.")
        else:
            updates[name] = check_value(value, hints[name], path, source)
    try:
        return dataclasses.replace(cfg, **updates)  # type: ignore[type-var]
    except (ValueError, TypeError) as exc:  # a section's own range checks (__post_init__)
        if isinstance(exc, ConfigError):
            raise
        where = prefix.rstrip(".") or "<root>"
        raise ConfigError(f"{source}: invalid value in section '{where}': {exc}") from exc


def from_dict(cls: type[T], data: dict[str, Any], source: str) -> T:
    """A ``cls`` from a plain dict (e.g. a section stored in a checkpoint): the defaults with ``data`` merged."""
    return merge_dict(cls(), data, source)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples become lists, paths strings) that YAML and torch.save store without custom
    classes; :func:`merge_dict` / :func:`from_dict` read it back."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def check_choices(obj: Any, prefix: str) -> None:
    """Every ``Literal`` field of dataclass ``obj`` holds one of its annotation's values; otherwise a ValueError
    naming ``<prefix><field>`` (e.g. prefix ``"config key qam."``). For sections' range checks: a section built
    directly, not through the loader, gets the same check."""
    for name, tp in _type_hints(type(obj)).items():
        allowed = _literal_values(tp)
        if allowed is not None and getattr(obj, name) not in allowed:
            raise ValueError(f"{prefix}{name}: got {getattr(obj, name)!r}, expected one of {list(allowed)}")


def _literal_values(tp: Any) -> tuple[Any, ...] | None:
    """The allowed values of ``Literal[...]`` or ``Literal[...] | None``; None for any other annotation."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        literals = [a for a in args if typing.get_origin(a) is Literal]
        if literals and all(typing.get_origin(a) is Literal or a is type(None) for a in args):
            return tuple(v for a in literals for v in typing.get_args(a)) + ((None,) if type(None) in args else ())
    return None


def _resolve_aliases(cls: type, data: dict[str, Any], source: str, prefix: str) -> dict[str, Any]:
    """Rename alias keys (a section's ``KEY_ALIASES``, e.g. ``lambda`` -> ``lambda_`` in ``loss.mask_sup``)."""
    aliases: dict[str, str] = getattr(cls, "KEY_ALIASES", {})
    if not aliases or not any(k in aliases for k in data):
        return data
    out: dict[str, Any] = {}
    given: dict[str, str] = {}  # canonical name -> the key it was given as
    for name, value in data.items():
        canonical = aliases.get(name, name)
        if canonical in out:
            alias = name if name != canonical else given[canonical]
            raise ConfigError(f"{source}: keys '{prefix}{given[canonical]}' and '{prefix}{name}' are the same "
                              f"setting ('{alias}' is an alias of '{canonical}'); give one of them")
        out[canonical], given[canonical] = value, name
    return out


def _suggest(name: str, candidates: set[str], prefix: str) -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.5)
    if close:
        return f"; did you mean '{prefix}{close[0]}'?"
    return f" (valid keys here: {', '.join(sorted(candidates))})"


_HINT_CACHE: dict[type, dict[str, Any]] = {}


def _type_hints(cls: type) -> dict[str, Any]:
    """Field annotations, resolved (the config modules use ``from __future__ import annotations``)."""
    if cls not in _HINT_CACHE:
        names = {f.name for f in dataclasses.fields(cls)}
        _HINT_CACHE[cls] = {k: v for k, v in typing.get_type_hints(cls).items() if k in names}
    return _HINT_CACHE[cls]


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    choices = _literal_values(tp)
    if choices is not None:
        return f"one of {list(choices)}"
    return str(tp).replace("typing.", "")


def check_value(value: Any, tp: Any, path: str, source: str) -> Any:
    """Check ``value`` against annotation ``tp``; return it converted (int->float, list->tuple...)."""
    try:
        return _convert(value, tp)
    except _Mismatch:
        raise ConfigError(
            f"{source}: key '{path}' got {value!r} ({type(value).__name__}); expected {_type_name(tp)}"
        ) from None


class _Mismatch(Exception):
    pass


def _convert(value: Any, tp: Any) -> Any:
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value in args:
            return value
        raise _Mismatch
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise _Mismatch
            return tuple(_convert(v, a) for v, a in zip(value, args))
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp) for v in value]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        if args:
            return {_convert(k, args[0]): _convert(v, args[1]) for k, v in value.items()}
        return dict(value)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            try:
                return merge_dict(tp(), value, source="")
            except ConfigError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise _Mismatch
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Mismatch
    return value  # an annotation this checker does not know: accept as given
