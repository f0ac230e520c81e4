"""Per-bot plugin configuration: validation against the plugin's schema, and secret fields.

A plugin declares its config as a msgspec Struct (``plugin_config_schema``
hook). Fields annotated with :data:`Secret` are write-only: stored encrypted,
masked in every API answer and log line.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any

import msgspec

SECRET_MARK = "botloom_secret"  # noqa: S105 - a marker name, not a secret
MASK = "********"

Secret = Annotated[
    str,
    msgspec.Meta(extra={SECRET_MARK: True}, extra_json_schema={"writeOnly": True, "format": "password"}),
]
"""Annotate a config field with this to make it a secret (a token, a password)."""


class ConfigError(ValueError):
    """A bot's config of a plugin does not satisfy its schema."""

    def __init__(self, plugin: str, errors: list[dict[str, str]]) -> None:
        self.plugin = plugin
        self.errors = errors
        fields = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        super().__init__(f"invalid config for plugin {plugin!r}: {fields}")


def secret_fields(schema: type[msgspec.Struct] | None) -> frozenset[str]:
    """Names of the top-level fields of ``schema`` annotated as :data:`Secret`."""
    if schema is None:
        return frozenset()
    hints = typing.get_type_hints(schema, include_extras=True)
    names = set()
    for field in msgspec.structs.fields(schema):
        if _is_secret(hints.get(field.name)):
            names.add(field.name)
    return frozenset(names)


def _is_secret(annotation: Any) -> bool:
    if typing.get_origin(annotation) is Annotated:
        return any(
            isinstance(meta, msgspec.Meta) and (meta.extra or {}).get(SECRET_MARK) for meta in annotation.__metadata__
        )
    return any(_is_secret(arg) for arg in typing.get_args(annotation))


def validate_config(plugin: str, schema: type[msgspec.Struct] | None, data: Any) -> dict[str, Any]:
    """Validate ``data`` against ``schema`` and return it normalised (defaults filled in).

    Raises :class:`ConfigError` listing every bad field. A plugin without a schema
    takes only an empty config.
    """
    if not isinstance(data, dict):
        raise ConfigError(plugin, [{"field": "config", "message": "must be a JSON object"}])
    if schema is None:
        if data:
            raise ConfigError(plugin, [{"field": name, "message": "this plugin takes no config"} for name in data])
        return {}
    known = {f.name for f in msgspec.structs.fields(schema)}
    errors = [{"field": n, "message": "unknown field"} for n in data if n not in known]
    errors += [e for e in _field_errors(schema, {k: v for k, v in data.items() if k in known}) if e not in errors]
    if errors:
        raise ConfigError(plugin, errors)
    normalised: dict[str, Any] = msgspec.to_builtins(msgspec.convert(data, schema, strict=False))
    return normalised


def _field_errors(schema: type[msgspec.Struct], data: dict[str, Any]) -> list[dict[str, str]]:
    """Every bad field of ``data`` (msgspec stops at the first; this checks each on its own)."""
    try:
        msgspec.convert(data, schema, strict=False)
        return []
    except msgspec.ValidationError as exc:
        first = str(exc)
    errors: list[dict[str, str]] = []
    known = {f.name: f for f in msgspec.structs.fields(schema)}
    errors.extend({"field": n, "message": "unknown field"} for n in data if n not in known)
    for name, field in known.items():
        if name not in data:
            if field.required:
                errors.append({"field": name, "message": "is required"})
            continue
        probe = msgspec.defstruct("Probe", [(name, field.type)], kw_only=True)
        try:
            msgspec.convert({name: data[name]}, probe, strict=False)
        except msgspec.ValidationError as exc:
            errors.append({"field": name, "message": str(exc).split(" - at ")[0]})
    if not errors:  # a cross-field check in __post_init__
        errors.append({"field": "config", "message": first})
    return errors


def mask_secrets(schema: type[msgspec.Struct] | None, config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with every secret field's value replaced by a mask (or ``None``)."""
    secrets = secret_fields(schema)
    return {k: (MASK if k in secrets and v else v) for k, v in config.items()}


def split_secrets(schema: type[msgspec.Struct] | None, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a validated config into its public part and its secret part."""
    secrets = secret_fields(schema)
    public = {k: v for k, v in config.items() if k not in secrets}
    hidden = {k: v for k, v in config.items() if k in secrets}
    return public, hidden
