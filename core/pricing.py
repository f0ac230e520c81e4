"""What a model call costs: a per-model price table, an operator setting (``BOTLOOM_MODEL_PRICES``).

Prices are US dollars per million tokens, input (prompt) and output (completion). The
defaults are OpenAI's public list prices for the models botloom's docs name
(:data:`DEFAULT_PRICES`); ``BOTLOOM_MODEL_PRICES`` adds models and overrides or removes
defaults, as comma-separated ``model=input/output`` entries::

    BOTLOOM_MODEL_PRICES="my-gateway-model=0.5/1.5,gpt-4o=2.5/10,gpt-4.1=unknown"

A model is looked up by its exact name, as the bot's settings name it: a model the
table does not name has an unknown cost (``None``), never an estimate. Cached-input
discounts and batch prices are not counted: a cost is the call's tokens at list price.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MILLION = 1_000_000
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$")
UNKNOWN = "unknown"
"""An entry's price that removes a default (the model's cost becomes unknown)."""


@dataclass(frozen=True)
class ModelPrice:
    """A model's list price, US dollars per million tokens."""

    input_per_million: float
    output_per_million: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """The price of a call with these token counts, in US dollars."""
        return (prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million) / MILLION


DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    "gpt-4o-mini": ModelPrice(0.15, 0.60),
    "gpt-4o": ModelPrice(2.50, 10.00),
    "gpt-4.1": ModelPrice(2.00, 8.00),
    "gpt-4.1-mini": ModelPrice(0.40, 1.60),
    "gpt-4.1-nano": ModelPrice(0.10, 0.40),
}
"""OpenAI's public list prices (standard tier) of the models botloom's docs name; nothing else is assumed."""


def _amount(text: str, entry: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{entry!r}: prices are numbers (US dollars per million tokens)") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{entry!r}: a price is a finite number of dollars, zero or more")
    return value


def parse_prices(text: str) -> dict[str, ModelPrice | None]:
    """The entries of ``BOTLOOM_MODEL_PRICES`` (``None`` for ``model=unknown``); ``ValueError`` naming a bad one."""
    out: dict[str, ModelPrice | None] = {}
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, price = (part.strip() for part in entry.partition("="))
        if not sep or not NAME.match(name):
            raise ValueError(f"{entry[:80]!r}: each entry is model=input/output (US dollars per million tokens)")
        if price.lower() == UNKNOWN:
            out[name] = None
            continue
        given, slash, taken = price.partition("/")
        if not slash:
            raise ValueError(f"{entry[:80]!r}: give the input and the output price, as input/output")
        out[name] = ModelPrice(_amount(given.strip(), entry[:80]), _amount(taken.strip(), entry[:80]))
    return out


def price_table(setting: str = "") -> dict[str, ModelPrice]:
    """The defaults with the setting's entries applied (added, overridden, or removed by ``unknown``)."""
    table = dict(DEFAULT_PRICES)
    for name, price in parse_prices(setting).items():
        if price is None:
            table.pop(name, None)
        else:
            table[name] = price
    return table


def call_cost(call: Mapping[str, Any], table: Mapping[str, ModelPrice]) -> float | None:
    """The cost of a recorded model call (``model``, ``prompt_tokens``, ``completion_tokens``); ``None`` if unknown."""
    price = table.get(str(call.get("model") or ""))
    prompt, completion = call.get("prompt_tokens"), call.get("completion_tokens")
    if price is None or not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return price.cost(prompt, completion)


def total_cost(costs: Iterable[float | None]) -> float | None:
    """The sum of some calls' costs; ``None`` when any of them is unknown (``0.0`` for no call)."""
    total = 0.0
    for cost in costs:
        if cost is None:
            return None
        total += cost
    return total


__all__ = ["DEFAULT_PRICES", "ModelPrice", "call_cost", "parse_prices", "price_table", "total_cost"]
