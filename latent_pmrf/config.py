"""The one config path: YAML (OmegaConf) merged onto dataclass defaults, then CLI ``key=value``
overrides, validated before any work starts.

A ``model.preset`` key names the model preset whose fields become the defaults, so a YAML file
says only what differs from the preset.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the file and the key."""


def load_config(
    schema: Callable[..., T],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    presets: Callable[[str], Any] | dict[str, Callable[[str], Any]] | None = None,
) -> T:
    """Build a ``schema`` dataclass from YAML ``path`` and dotlist ``overrides``.

    ``presets`` maps a dotted config path to a function of a preset name (a bare function means
    ``{"model": function}``): ``model.preset: name`` replaces the schema's default ``model`` by
    ``presets["model"](name)`` before the YAML and overrides are merged on top.
    """
    source = str(path) if path is not None else "<defaults>"
    try:
        raw = OmegaConf.load(path) if path is not None else OmegaConf.create()
        cli = OmegaConf.from_dotlist(list(overrides or []))
        user = OmegaConf.merge(raw, cli)
    except (OmegaConfBaseException, OSError, ValueError, yaml.YAMLError) as err:
        raise ConfigError(f"{source}: cannot read config: {err}") from err
    if not OmegaConf.is_dict(user):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")

    defaults = schema()
    if presets is not None and not isinstance(presets, dict):
        presets = {"model": presets}
    if OmegaConf.select(user, "model.preset") is not None and "model" not in (presets or {}):
        raise ConfigError(f"{source}: model.preset is not supported by {schema.__name__}")
    for where in presets or {}:
        name = OmegaConf.select(user, f"{where}.preset")
        if name is None:
            continue
        try:
            defaults = _replace_at(defaults, where.split("."), presets[where](str(name)))
        except KeyError as err:
            raise ConfigError(f"{source}: {where}.preset: {err.args[0]}") from err
        OmegaConf.select(user, where).pop("preset")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(defaults), user)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ConfigError(f"{source}: invalid value for {key}: {str(err).splitlines()[0]}") from err
    except (ValueError, TypeError) as err:  # raised by a dataclass __post_init__ check
        raise ConfigError(f"{source}: {err}") from err


def _replace_at(obj, path: list[str], value):
    if len(path) == 1:
        return dataclasses.replace(obj, **{path[0]: value})
    return dataclasses.replace(obj, **{path[0]: _replace_at(getattr(obj, path[0]), path[1:], value)})


def from_dict(schema: Callable[..., T], data: dict) -> T:
    """Rebuild a config dataclass from ``to_dict`` output (e.g. a checkpoint's hyperparameters).
    A schema with a ``defaults_for(data)`` classmethod picks its defaults from the data (e.g. the
    velocity-model family of a flow config)."""
    try:
        defaults = schema.defaults_for(data) if hasattr(schema, "defaults_for") else schema()
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(defaults), data))
    except (OmegaConfBaseException, ValueError, TypeError) as err:
        raise ConfigError(f"stored config does not fit {schema.__name__}: {err}") from err


def to_yaml(config: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def to_dict(config: Any) -> dict:
    """Plain nested dict (safe for ``torch.load(weights_only=True)`` checkpoints)."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)
