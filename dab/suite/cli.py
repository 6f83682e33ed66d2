"""Command-line overrides checked before Hydra composes them, so an unknown preset or key gets one
line naming the valid names (closest first) instead of Hydra's report. Used by train.py only."""
from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from dab.errors import ConfigError
from dab.hard_fns import HARD_FNS
from dab.registry import Option, check_keys, closest_first
from dab.suite.config import FAMILY_GROUPS, Config
from dab.suite.datasets import DATASETS
from dab.suite.families import FAMILIES
from dab.suite.models.latents import LATENTS

# Hydra flags that take a value (the next word): that word is not an override
_FLAGS_WITH_VALUE = {"-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir", "-c", "--cfg",
                     "-p", "--package", "--experimental-rerun"}
_HELP_FLAGS = {"-h", "--help", "-hh", "--hydra-help", "-i", "--info", "--shell-completion", "-sc"}


def unknown(kind: str, name: str, choices) -> ConfigError:
    return ConfigError(f"unknown {kind} '{name}'; valid choices: {', '.join(closest_first(name, choices))}")


def group_choices(conf_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def group_option(group: str, name: str) -> Option | None:
    """The registered option ``name`` of a family-owned group (None if unknown: validation says so)."""
    if group == "model":
        registries = [family.MODELS for family in FAMILIES.values()]
    else:
        registries = [{"dataset": DATASETS, "hard_fn": HARD_FNS, "latent": LATENTS}[group]]
    return next((r[name] for r in registries if name in r), None)


def _defaults(path: Path) -> dict[str, str]:
    """``group: option`` choices in a config file's defaults list (``override /group: x`` too)."""
    if not path.is_file():
        return {}
    out = {}
    for entry in (yaml.safe_load(path.read_text()) or {}).get("defaults") or []:
        if isinstance(entry, dict):
            for key, value in entry.items():
                group = key.removeprefix("override ").strip().lstrip("/")
                if group in FAMILY_GROUPS and isinstance(value, str):
                    out[group] = value
    return out


def selected_options(parsed: list, conf_dir: Path) -> dict[str, set[str]]:
    """Per family-owned group, the option(s) the composed config will hold: config.yaml's default,
    replaced by each preset's choice, replaced by the command line's (sweeps: every value)."""
    chosen = {g: {v} for g, v in _defaults(conf_dir / "config.yaml").items()}
    presets = [v for o in parsed if o.key_or_group == "experiment" for v in override_values(o)]
    if presets:
        per = [_defaults(conf_dir / "experiment" / f"{p}.yaml") for p in presets]
        for group in FAMILY_GROUPS:
            names = {d.get(group) for d in per}
            if names != {None}:
                chosen[group] = {n for n in names if n is not None} | (chosen.get(group, set()) if None in names else set())
    for o in parsed:
        if o.key_or_group in FAMILY_GROUPS:
            chosen[o.key_or_group] = set(override_values(o))
    return chosen


def check_group_key(key: str, chosen: dict[str, set[str]]) -> None:
    """``group.setting`` must be a setting of every option the group may hold."""
    group, _, setting = key.partition(".")
    setting = setting.split(".")[0]
    if setting == "name":
        return
    for name in sorted(chosen.get(group, ())):
        option = group_option(group, name)
        if option is not None and option.schema is not None:
            check_keys({setting: None}, option.schema, f"{group}.", f"{group}={name}")
        elif option is not None:
            raise ConfigError(f"unknown config key '{group}.{setting}' for {group}={name}; valid keys: none")


def check_key(key: str, schema: type = Config) -> None:
    """Raise if the dotted ``key`` is not a field path of the config schema."""
    node, done = schema, ""
    for part in key.split("."):
        if not is_dataclass(node):  # a list or free-form leaf: sub-keys are the leaf's business
            return
        check_keys({part: None}, node, done)
        default = {f.name: f for f in fields(node)}[part].default_factory
        node = default() if callable(default) else None
        done += f"{part}."


def override_values(override) -> list[str]:
    """The value(s) an override sets: one, or each of a sweep's choices."""
    value = override.value()
    return [str(v) for v in getattr(value, "list", [value])]


def check_overrides(args: list[str], conf_dir: Path) -> None:
    """Check train.py's command-line overrides: config groups must name a file under
    ``conf_dir/<group>/`` and keys must exist in :class:`dab.suite.config.Config`. Hydra's own keys,
    flags and anything Hydra's parser rejects are left to Hydra."""
    if any(a in _HELP_FLAGS for a in args):
        return
    parser = OverridesParser.create()
    skip_next = False
    parsed = []
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
        parsed.append(override)
    chosen = selected_options(parsed, conf_dir)
    for override in parsed:
        key = override.key_or_group
        if (conf_dir / key).is_dir():
            continue
        if key.split(".")[0] in FAMILY_GROUPS:
            check_group_key(key, chosen)
        else:
            check_key(key)
