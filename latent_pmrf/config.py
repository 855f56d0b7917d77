"""The one config path: YAML (OmegaConf) merged onto dataclass defaults, then CLI ``key=value``
overrides, validated before any work starts.

A ``model.preset`` key names the model preset whose fields become the defaults, so a YAML file
says only what differs from the preset; a ``base:`` key names the YAML file it varies, so it says
only what differs from that run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the file and the key."""


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> DictConfig:
    """A YAML config with its ``base:`` chain merged in: ``base: other.yaml`` (relative to this
    file) is read first and this file's keys are merged over it (lists are replaced, not
    concatenated), so a paper row states only what differs from the run it varies."""
    path = Path(path)
    try:
        raw = OmegaConf.load(path)
    except (OmegaConfBaseException, OSError, ValueError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read config: {err}") from err
    if not OmegaConf.is_dict(raw):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    base = raw.pop("base", None)
    if base is None:
        return raw
    base_path = (path.parent / str(base)).resolve()
    if base_path in _seen:
        raise ConfigError(f"{path}: base {base} includes itself ({' -> '.join(str(p) for p in (*_seen, base_path))})")
    if not base_path.is_file():
        raise ConfigError(f"{path}: base {base} not found (looked for {base_path})")
    return OmegaConf.merge(read_yaml(base_path, (*_seen, path.resolve())), raw)


def read_task(path: str | Path, default: str) -> str:
    """The ``task`` key of a config file (through its ``base:`` chain), ``default`` if absent."""
    return str(read_yaml(path).get("task", default))


def load_config(
    schema: Callable[..., T],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    presets: Callable[[str], Any] | dict[str, Callable[[str], Any]] | None = None,
) -> T:
    """Build a ``schema`` dataclass from YAML ``path`` (with its ``base:`` chain) and dotlist
    ``overrides``; every error is a ``ConfigError`` naming the file, or the command-line override,
    and the key.

    ``presets`` maps a dotted config path to a function of a preset name (a bare function means
    ``{"model": function}``): ``model.preset: name`` replaces the schema's default ``model`` by
    ``presets["model"](name)`` before the YAML and overrides are merged on top.
    """
    overrides = list(overrides or [])
    source = str(path) if path is not None else "<defaults>"
    raw = read_yaml(path) if path is not None else OmegaConf.create()
    try:
        cli = OmegaConf.from_dotlist(overrides)
    except (OmegaConfBaseException, ValueError, yaml.YAMLError) as err:
        raise ConfigError(f"command-line overrides {overrides}: {err}") from err
    user = OmegaConf.merge(raw, cli)

    def blame(key: str | None) -> str:
        """The override that set ``key`` (or a parent of it), else the file."""
        for item in overrides:
            name = item.split("=", 1)[0]
            if key and (key == name or key.startswith(name + ".") or name.startswith(key + ".")):
                return f"{source}, override {item!r}"
        return source

    defaults = schema()
    if presets is not None and not isinstance(presets, dict):
        presets = {"model": presets}
    if OmegaConf.select(user, "model.preset") is not None and "model" not in (presets or {}):
        raise ConfigError(f"{blame('model.preset')}: model.preset is not supported by {schema.__name__}")
    for where in presets or {}:
        name = OmegaConf.select(user, f"{where}.preset")
        if name is None:
            continue
        try:
            defaults = _replace_at(defaults, where.split("."), presets[where](str(name)))
        except KeyError as err:
            raise ConfigError(f"{blame(where + '.preset')}: {where}.preset: {err.args[0]}") from err
        OmegaConf.select(user, where).pop("preset")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(defaults), user)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ConfigError(f"{blame(key)}: invalid value for {key}: {str(err).splitlines()[0]}") from err
    except (ValueError, TypeError) as err:  # raised by a dataclass __post_init__ check
        named = next((item for item in overrides if item.split("=", 1)[0].split(".")[-1] in str(err)), None)
        raise ConfigError(f"{source}, override {named!r}: {err}" if named else f"{source}: {err}") from err


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
