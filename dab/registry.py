"""Named options of an extension point (hard functions, approximators, estimators, DAB losses;
in the suite also optimizers, data sets, models and latents).

Registering a name is the only list of names: validation, the command line's closest-match
suggestions and the tests that check ``conf/<group>/*.yaml`` all read the registry. An option
declares a ``schema`` (a dataclass of its own settings, ``name`` excluded) and builds its thing
from it; facts about an option are typed fields of what it builds (e.g. a hard function's
``Facts``), never free keyword arguments::

    HARD_FNS = Registry("hard_fn")

    @dataclass
    class SignumArgs:
        eps: float = 0.5

    @HARD_FNS.register("signum", schema=SignumArgs)
    def signum(args: SignumArgs) -> HardFn: ...
"""
from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Callable, Iterator, Mapping

from dab.errors import ConfigError


def closest_first(name: str, choices) -> list[str]:
    """All of ``choices``, the most similar to ``name`` first (difflib ratio), ties as given."""
    choices = list(choices)
    return sorted(choices, key=lambda c: -difflib.SequenceMatcher(None, str(name), c).ratio())


@dataclass(frozen=True)
class Option:
    """One registered option: its name, what builds it and its settings' schema."""

    name: str
    build: Any
    schema: type | None = None

    def __call__(self, *args, **kwargs):
        return self.build(*args, **kwargs)

    def keys(self) -> tuple[str, ...]:
        """The settings this option reads (its schema's fields), ``name`` excluded."""
        return () if self.schema is None else tuple(f.name for f in fields(self.schema))

    def args(self, values: Mapping[str, Any] | None = None, where: str | None = None) -> Any:
        """The schema filled from config ``values`` (missing keys take their defaults); a key the
        schema does not have, or a value of the wrong type, is a ConfigError naming the valid keys.
        ``where`` names the config node in the message (e.g. ``hard_fn``)."""
        values = {k: v for k, v in (values or {}).items() if k != "name"}
        node = where or "option"
        check_keys(values, self.schema, f"{node}.", option=f"{node}={self.name}")
        hints = typing.get_type_hints(self.schema) if self.schema is not None else {}
        for key, value in values.items():
            if not _conforms(value, hints.get(key, Any)):
                raise ConfigError(f"{node}.{key} must be {_type_name(hints[key])} for {node}={self.name}, got {value!r}")
        return None if self.schema is None else self.schema(**values)

    def from_call(self, values: Mapping[str, Any] | None, caller: str, label: str | None = None) -> Any:
        """The schema filled from the keyword arguments of a library call, checked like :meth:`args`
        but worded for the call: ``make_bridge: signum takes no setting 'epsilon'; valid settings:
        eps``. ``label`` names the option in messages (default: its name)."""
        values = dict(values or {})
        label = label or self.name
        check_keys(values, self.schema, option=label, caller=caller)
        hints = typing.get_type_hints(self.schema) if self.schema is not None else {}
        for key, value in values.items():
            if not _conforms(value, hints.get(key, Any)):
                raise ConfigError(f"{caller}: {label} setting {key} must be {_type_name(hints[key])}, got {value!r}")
        return None if self.schema is None else self.schema(**values)


@dataclass(frozen=True)
class NoSettings:
    """The settings of an option that has none (so that every option builds from a dataclass)."""


def check_keys(values: Mapping[str, Any], schema: type | None, prefix: str = "", option: str | None = None,
               caller: str | None = None) -> None:
    """The one check of keys against a schema: every key of ``values`` must be a field of the
    dataclass ``schema`` (None: it has none); otherwise one ConfigError naming the key and the
    valid keys, the closest first. In config words by default (``unknown config key
    'trainer.max_stpes'``, after ``prefix``, ``for`` the ``option`` they belong to, e.g.
    ``hard_fn=signum``); in a library call's words where ``caller`` names it (``make_bridge: signum
    takes no setting 'epsilon'; valid settings: eps``)."""
    valid = [f.name for f in fields(schema)] if schema is not None else []
    for key in values:
        if key not in valid:
            closest = ", ".join(closest_first(key, valid)) or "none"
            if caller is not None:
                raise ConfigError(f"{caller}: {option} takes no setting '{key}'; valid settings: {closest}")
            owner = f" for {option}" if option else ""
            raise ConfigError(f"unknown config key '{prefix}{key}'{owner}; valid keys: {closest}")


def _conforms(value: Any, tp: Any) -> bool:
    """Whether ``value`` (from a config: int, float, bool, str, None, list) fits the annotation ``tp``."""
    if tp is Any:
        return True
    origin, targs = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return any(_conforms(value, t) for t in targs)
    if tp is type(None):
        return value is None
    if origin in (list, tuple) or tp in (list, tuple):
        return isinstance(value, (list, tuple)) and all(_conforms(v, targs[0] if targs else Any) for v in value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp) if isinstance(tp, type) else True


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_DECORATE = object()  # register(name) without a build: used as a decorator


class Registry:
    """Options of one extension point by name; ``kind`` names it in messages (e.g. ``hard_fn``)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._options: dict[str, Option] = {}

    def register(self, name: str, build: Any = _DECORATE, *, schema: type | None = None) -> Any:
        """Register ``build`` as ``name`` (without ``build``: a decorator). Registering a taken name
        is an error."""
        if schema is not None and not is_dataclass(schema):
            raise TypeError(f"{self.kind} '{name}': schema must be a dataclass, got {schema!r}")

        def add(obj: Any) -> Any:
            if name in self._options:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._options[name] = Option(name, obj, schema)
            return obj

        return add if build is _DECORATE else add(build)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests that register a throwaway option)."""
        self._options.pop(name, None)

    def __getitem__(self, name: str) -> Option:
        if name not in self._options:
            raise ConfigError(f"unknown {self.kind} '{name}'; valid choices: {', '.join(closest_first(name, self))}")
        return self._options[name]

    def get(self, name: str) -> Option:
        return self[name]

    def __contains__(self, name: object) -> bool:
        return name in self._options

    def __iter__(self) -> Iterator[str]:
        return iter(self._options)

    def __len__(self) -> int:
        return len(self._options)

    def names(self) -> tuple[str, ...]:
        return tuple(self._options)

    def where(self, predicate: Callable[[Option], bool]) -> tuple[str, ...]:
        """The names of the options for which ``predicate(option)`` holds."""
        return tuple(name for name, opt in self._options.items() if predicate(opt))

    def check(self, name: str, allowed: tuple[str, ...] | None = None, what: str | None = None) -> Option:
        """The option ``name``, which must be registered and (when given) among ``allowed``. ``what``
        names the setting in messages: without ``allowed`` in place of the kind (e.g. "dab.estimator"),
        with it for a registered option that is not allowed (e.g. "dataset for task sort")."""
        choices = self.names() if allowed is None else allowed
        if name not in self._options:
            kind = what if what is not None and allowed is None else self.kind
            raise ConfigError(f"unknown {kind} '{name}'; valid choices: {', '.join(closest_first(name, choices))}")
        if name not in choices:
            raise ConfigError(f"{what or self.kind} '{name}' is not valid here; valid choices: "
                              + ", ".join(closest_first(name, choices)))
        return self._options[name]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._options)})"
