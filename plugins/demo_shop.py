"""The demo shop: an order-status tool over demo data, and the intent that uses it.

Its orders are fixed demo data so the demo bot can answer "where is my order
1234?" on a fresh machine. A real shop plugin would call the shop's API from
the tool with credentials from its config.
"""

from __future__ import annotations

import msgspec

from botloom import Intent, Slot, Tool, ToolContext, hookimpl

ORDERS: dict[str, dict[str, str]] = {
    "1234": {"status": "shipped", "carrier": "DHL", "eta": "Thursday"},
    "1235": {"status": "processing", "carrier": "-", "eta": "next week"},
    "1236": {"status": "delivered", "carrier": "UPS", "eta": "delivered on Monday"},
    "4321": {"status": "cancelled", "carrier": "-", "eta": "-"},
}


class DemoShopConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings of the demo shop plugin."""

    shop_name: str = "Acme Shop"


async def order_status(order_number: str, context: ToolContext) -> dict[str, str]:
    """Look up the status of an order by its order number."""
    order = ORDERS.get(order_number.strip().lstrip("#"))
    if order is None:
        return {
            "found": "no",
            "order_number": order_number,
            "reply": f"I couldn't find an order with the number {order_number}. Please check the number.",
        }
    shop = str(context.config.get("shop_name", "Acme Shop"))
    eta = order["eta"]
    reply = {
        "shipped": f"Your {shop} order {order_number} has shipped with {order['carrier']} and should arrive {eta}.",
        "processing": f"Your {shop} order {order_number} is being prepared; it should ship {eta}.",
        "delivered": f"Your {shop} order {order_number} was {eta}.",
        "cancelled": f"Your {shop} order {order_number} was cancelled.",
    }[order["status"]]
    return {"found": "yes", "order_number": order_number, **order, "reply": reply}


@hookimpl
def register_tools() -> list[Tool]:
    """The ``order_status`` tool."""
    return [Tool.from_function(order_status, timeout=5.0)]


@hookimpl
def register_intents() -> list[Intent]:
    """The ``order_status`` intent, whose slot is the order number."""
    return [
        Intent(
            name="order_status",
            description="The user asks where their order is or what its status is.",
            examples=(
                "where is my order",
                "what's the status of my order 1234",
                "has my order shipped yet",
                "track my package",
                "when will my order arrive",
                "order status",
                "I haven't received my order",
            ),
            slots=(
                Slot(
                    name="order_number",
                    description="The order number, four or more digits",
                    pattern=r"#?\b(\d{4,10})\b",
                    required=True,
                    prompt="Sure, I can check that. What is your order number?",
                ),
            ),
            tools=("order_status",),
        )
    ]


@hookimpl
def plugin_config_schema() -> type[msgspec.Struct]:
    """The demo shop's config: the shop's display name."""
    return DemoShopConfig
