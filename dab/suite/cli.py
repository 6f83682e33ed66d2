"""Command-line overrides checked before Hydra composes them, so an unknown preset or key gets one
line naming the valid names (closest first) instead of Hydra's report. Used by train.py only."""
from __future__ import annotations

import difflib
from dataclasses import fields, is_dataclass
from pathlib import Path

from dab.suite.config import Config
from dab.errors import ConfigError

# Hydra flags that take a value (the next word): that word is not an override
_FLAGS_WITH_VALUE = {"-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir", "-c", "--cfg",
                     "-p", "--package", "--experimental-rerun"}
_HELP_FLAGS = {"-h", "--help", "-hh", "--hydra-help", "-i", "--info", "--shell-completion", "-sc"}


def closest_first(name: str, choices) -> list[str]:
    """All of ``choices``, the most similar to ``name`` first (difflib ratio), the rest as given."""
    choices = list(choices)
    return sorted(choices, key=lambda c: -difflib.SequenceMatcher(None, name, c).ratio())


def unknown(kind: str, name: str, choices) -> ConfigError:
    return ConfigError(f"unknown {kind} '{name}'; valid choices: {', '.join(closest_first(name, choices))}")


def group_choices(conf_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def check_key(key: str, schema: type = Config) -> None:
    """Raise if the dotted ``key`` is not a field path of the config schema."""
    node, done = schema, []
    for part in key.split("."):
        if not is_dataclass(node):  # a list or free-form leaf: sub-keys are the leaf's business
            return
        known = {f.name: f for f in fields(node)}
        if part not in known:
            where = f" of {'.'.join(done)}" if done else ""
            raise ConfigError(f"unknown config key '{'.'.join([*done, part])}'; valid keys{where}: "
                              + ", ".join(closest_first(part, known)))
        default = known[part].default_factory
        node = default() if callable(default) else None
        done.append(part)


def override_values(override) -> list[str]:
    """The value(s) an override sets: one, or each of a sweep's choices."""
    value = override.value()
    return [str(v) for v in getattr(value, "list", [value])]


def check_overrides(args: list[str], conf_dir: Path) -> None:
    """Check train.py's command-line overrides: config groups must name a file under
    ``conf_dir/<group>/`` and keys must exist in :class:`dab.suite.config.Config`. Hydra's own keys,
    flags and anything Hydra's parser rejects are left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if any(a in _HELP_FLAGS for a in args):
        return
    parser = OverridesParser.create()
    skip_next = False
    for arg in args:
        if skip_next or arg.startswith("-"):
            skip_next = arg in _FLAGS_WITH_VALUE
            continue
        try:
            override = parser.parse_override(arg)
        except HydraException:
            continue
        key = override.key_or_group
        if key.startswith("hydra") or override.is_delete() or override.package is not None:
            continue
        if (conf_dir / key).is_dir():
            choices = group_choices(conf_dir, key)
            for value in override_values(override):
                if value not in choices:
                    raise unknown(key if key != "experiment" else "experiment preset", value, choices)
        else:
            check_key(key)
