"""The suite's Hydra config composed outside ``train.py``: for the benchmark scripts and the tests.

Composes ``config.yaml`` exactly as ``train.py`` does (same search path, the structured schema
registered), without Hydra's runtime keys or a run directory. Needs Hydra, unlike the library.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore

from dab.suite.config import Config

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # this checkout's conf/


def register_schema() -> None:
    """:class:`dab.suite.config.Config` as Hydra's ``base_config``: a typo'd shared key fails at composition."""
    ConfigStore.instance().store(name="base_config", node=Config)


def compose_config(overrides: Iterable[str] = (), config_dir: Path | str = CONF_DIR):
    """The composed config (a DictConfig) for ``overrides``, e.g. ``["+experiment=sort_t10",
    "trainer.device=cpu"]``; ``config_dir`` holds ``config.yaml`` and the groups."""
    register_schema()
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))
