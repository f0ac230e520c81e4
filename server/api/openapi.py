"""The API schema says what the server checks: request and answer types described by msgspec itself.

Litestar builds its own JSON schema of a msgspec Struct, and it loses what the
server then enforces: a bound of ``0`` (``ge=0`` is dropped as falsy), the
constraints of a list's items (``allowed_origins: list[Origin]``), and that a
request Struct with ``forbid_unknown_fields`` refuses fields it does not name.
A client (or schemathesis) reading ``/schema`` then sends requests the schema
allows and gets a 400.

:class:`ExactStructSchemaPlugin` keeps Litestar's component for each Struct (its
name, its references to nested Structs and enums) and replaces every property
msgspec describes without a reference by msgspec's own description, the one its
decoder enforces; ``additionalProperties: false`` says that unknown fields are
refused. ``create_app`` registers it before Litestar's own Struct plugin.
"""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING, Any

import msgspec
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi.spec import OpenAPIFormat, OpenAPIType, Schema

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.typing import FieldDefinition

_NESTED_ONE = {"items", "additionalProperties", "not", "contains", "propertyNames"}
_NESTED_MANY = {"anyOf", "oneOf", "allOf", "prefixItems"}


@cache
def msgspec_component(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """The JSON schema msgspec gives ``struct`` (its own component, nested types as references)."""
    (_,), components = msgspec.json.schema_components([struct], ref_template="#/components/schemas/{name}")
    component: dict[str, Any] = components[struct.__name__]
    return component


def has_reference(schema: Any) -> bool:
    """Whether a JSON schema refers to another component (a nested Struct or an enum) anywhere."""
    return '"$ref"' in json.dumps(schema)


_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength")
_CONSTRAINTS = (*_BOUNDS, "pattern", "minItems", "maxItems", "enum", "const")


def is_constrained(schema: Any) -> bool:
    """Whether a JSON schema bounds its values anywhere (a plain ``string`` or ``integer`` is not)."""
    text = json.dumps(schema)
    return any(f'"{keyword}"' in text for keyword in _CONSTRAINTS)


def to_schema(value: dict[str, Any]) -> Schema:
    """A JSON schema without references as Litestar's :class:`Schema`."""
    return Schema(**{Schema.field_aliases().get(key, key): _converted(key, item) for key, item in value.items()})


def _converted(key: str, item: Any) -> Any:
    """The value of keyword ``key`` as Litestar's :class:`Schema` holds it."""
    if key in _NESTED_ONE and isinstance(item, dict):
        return to_schema(item)
    if key in _NESTED_MANY:
        return [to_schema(part) for part in item]
    if key == "properties":
        return {prop: to_schema(part) for prop, part in item.items()}
    if key == "format":
        return OpenAPIFormat(item)
    if key == "type":
        return [OpenAPIType(t) for t in item] if isinstance(item, list) else OpenAPIType(item)
    return item


class ExactStructSchemaPlugin(StructSchemaPlugin):
    """Litestar's Struct component, with each property as msgspec validates it and unknown fields declared."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        """The component of a Struct: Litestar's, corrected from msgspec's own JSON schema."""
        schema = super().to_openapi_schema(field_definition, schema_creator)
        exact = msgspec_component(field_definition.type_)
        properties = dict(schema.properties or {})
        for name, described in exact.get("properties", {}).items():
            if name not in properties or has_reference(described) or not is_constrained(described):
                continue  # Litestar's reference to a nested component, or its plain type (with its format), stays
            replaced = to_schema(described)
            previous = properties[name]
            if isinstance(previous, Schema):  # keep what msgspec does not know: the docstring, the default
                replaced.description = replaced.description or previous.description
                if replaced.default is None and previous.default is not None:
                    replaced.default = previous.default
            properties[name] = replaced
        schema.properties = properties
        schema.required = sorted(exact.get("required", ())) or None
        if exact.get("additionalProperties") is False:
            schema.additional_properties = False
        return schema


__all__ = ["ExactStructSchemaPlugin", "has_reference", "is_constrained", "msgspec_component", "to_schema"]
