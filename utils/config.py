"""Config loading for a typed schema: YAML files, command-line overrides, clear errors.

The schema itself (the root `Config` and its sections) lives in configs/schema.py, beside the YAML
presets; model/config.py holds the model's section. This module knows no schema: it validates a
plain dict against any dataclass schema, suggests the closest valid key for a misspelled one,
parses `key=value` overrides (and the reference scripts' `key = value`), and returns read-only
OmegaConf configs.
"""

import difflib
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


def schema_paths(schema: type, prefix: str = "") -> dict[str, type]:
    """Every valid dotted key of a dataclass schema, mapped to its field type."""
    hints = typing.get_type_hints(schema)
    paths = {}
    for f in fields(schema):
        path = f"{prefix}{f.name}"
        paths[path] = hints[f.name]
        if is_dataclass(hints[f.name]):
            paths.update(schema_paths(hints[f.name], path + "."))
    return paths


def suggest(path: str, paths: Sequence[str]) -> str:
    """' (did you mean ...?)' for an unknown dotted key, or ''."""
    parent, _, leaf = path.rpartition(".")
    # The right name under another section (training.d_head -> model.transformer.d_head) first,
    # then a near spelling among its siblings, then anywhere.
    close = [p for p in paths if p.rpartition(".")[2] == leaf][:1]
    siblings = [p for p in paths if p.rpartition(".")[0] == parent]
    close = close or difflib.get_close_matches(path, siblings, n=1, cutoff=0.6)
    close = close or difflib.get_close_matches(path, list(paths), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_keys(node: Any, schema: type, where: str, rejected: Mapping[str, str],
               paths: Optional[Sequence[str]] = None, prefix: str = "") -> None:
    """Raise ConfigError for the first key of `node` that the schema does not know; a key in
    `rejected` (dotted path -> reason) gets its reason instead of a suggestion from `paths` (the
    root schema's keys)."""
    paths = list(schema_paths(schema)) if paths is None else paths
    if not isinstance(node, dict):
        raise ConfigError(f"{where}: '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {node!r}")
    hints = typing.get_type_hints(schema)
    for key, value in node.items():
        path = f"{prefix}{key}"
        if key not in hints and path in rejected:
            raise ConfigError(f"{where}: '{path}' is a key of the reference implementations that this code does not "
                              f"support: {rejected[path]}")
        if key not in hints:
            raise ConfigError(f"{where}: unknown config key '{path}'{suggest(path, paths)}")
        if is_dataclass(hints[key]) and value is not None:
            check_keys(value, hints[key], where, rejected, paths, path + ".")


def _type_name(tp: type) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return f"{args[0].__name__} or null" if args else getattr(tp, "__name__", str(tp))


def merge(base: DictConfig, data: dict, where: str, schema: type, rejected: Mapping[str, str]) -> DictConfig:
    """`data` checked against `schema` and merged over `base`; a value of the wrong type names the key."""
    check_keys(data, schema, where, rejected)
    try:
        return OmegaConf.merge(base, data)
    except OmegaConfBaseException as err:
        key = err.full_key or "?"
        paths = schema_paths(schema)
        expected = _type_name(paths[key]) if key in paths else "a value of the schema's type"
        raise ConfigError(
            f"{where}: config key '{key}' expects {expected}, got {err.value!r}"
        ) from None


def join_overrides(tokens: Sequence[str]) -> list[str]:
    """Turn argv tokens into `key=value` strings, accepting `key = value` and `key= value`."""
    joined, i = [], 0
    tokens = list(tokens)
    while i < len(tokens):
        tok = tokens[i]
        if tok.endswith("=") and i + 1 < len(tokens):  # "key=" "value" or "key" "=" "value"
            joined.append(tok + tokens[i + 1])
            i += 2
        elif "=" not in tok and i + 1 < len(tokens) and tokens[i + 1].startswith("="):
            nxt = tokens[i + 1]
            if nxt == "=" and i + 2 < len(tokens):
                joined.append(f"{tok}={tokens[i + 2]}")
                i += 3
            else:
                joined.append(tok + nxt)
                i += 2
        elif "=" not in tok:
            raise ConfigError(f"override '{tok}' is not of the form key=value")
        else:
            joined.append(tok)
            i += 1
    return joined


def overrides_to_dict(overrides: Sequence[str]) -> dict:
    """Nested dict from `key=value` strings; values are parsed as YAML scalars (1e-4, true, null)."""
    nested: dict = {}
    for item in join_overrides(overrides):
        key, _, raw = item.partition("=")
        key = key.strip()
        try:
            value = yaml.safe_load(raw.strip()) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw.strip()
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is set twice, as a value and a section")
        node[parts[-1]] = value
    return nested


def build_config(schema: type, data: Optional[dict], overrides: Sequence[str] = (), where: str = "config",
                 rejected: Mapping[str, str] = {}) -> DictConfig:
    """Validated, read-only config of `schema` from a plain dict, then `key=value` overrides."""
    cfg = OmegaConf.structured(schema)
    cfg = merge(cfg, data or {}, where, schema, rejected)
    if overrides:
        cfg = merge(cfg, overrides_to_dict(overrides), "command-line override", schema, rejected)
    OmegaConf.set_readonly(cfg, True)
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"key '{key}' is given twice in one mapping (lines {seen[key] + 1} and "
                                  f"{key_node.start_mark.line + 1}): the first would be dropped; merge them")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict:
    """The mapping a YAML file holds; errors name the file: not YAML, a key given twice, empty or not a
    mapping (an empty file would train the schema's defaults without a word)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty (no model or training settings); a config starts from a "
                          "preset in configs/, e.g. configs/efficient_lvsm_256.yaml")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: holds a YAML {type(data).__name__}, not a mapping of sections (model:, training:)")
    return data


def to_dict(cfg: DictConfig) -> dict:
    """Plain dict of a config, for checkpoints and logs."""
    return OmegaConf.to_container(cfg, resolve=True)
