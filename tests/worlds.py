"""Worlds the authorization tests attack: two tenants made through the API, one owning what the routes name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from tests.test_api_resources import bearer, make_bot, make_tenant


@dataclass
class World:
    """Two tenants made through the API: A (``alpha``) attacks, B (``beta``) owns everything the routes name."""

    key_a: str
    key_b: str
    refs: dict[str, str]
    """Path values naming B's resources."""


async def two_tenants(
    client: httpx.AsyncClient, *, plugins: Sequence[str], text: str = "hello", escalates: bool = False
) -> World:
    """Tenants ``alpha`` and ``beta``, each with a bot ``helper``; B's bot has ``plugins`` and one conversation.

    The operator's ``client`` makes them; B's key sends ``text`` to B's bot (``escalates``:
    the reply hands the conversation to a person) and B gets a webhook. ``refs`` names B's
    tenant, bot, plugin (``smalltalk``), document (``faq.md``), conversation, the bot's reply,
    the webhook and the conversation's first checkpoint (``x`` when it has none to list).
    """
    _, key_a = await make_tenant(client, "alpha")
    tenant_b, key_b = await make_tenant(client, "beta")
    await make_bot(client, "alpha", "helper")
    bot_b = await make_bot(client, "beta", "helper")
    for plugin in plugins:
        r = await client.put(f"/api/v1/bots/beta/helper/plugins/{plugin}", json={"enabled": True})
        assert r.status_code == 200, r.text
    r = await client.post("/api/v1/bots/beta/helper/messages", json={"text": text}, headers=bearer(key_b))
    assert r.status_code == 200, r.text
    if escalates:
        assert r.json()["escalated"], r.text
    conversation, reply = r.json()["conversation_id"], r.json()["replies"][0]["id"]
    hook = await client.post("/api/v1/tenants/beta/webhooks", json={"url": "http://127.0.0.1:9/hook"})
    assert hook.status_code == 201, hook.text
    turns = await client.get(f"/api/v1/conversations/{conversation}/turns", headers=bearer(key_b))
    refs = {
        "tenant": tenant_b["id"],
        "bot": bot_b["id"],
        "plugin": "smalltalk",
        "document": "faq.md",
        "conversation_id": conversation,
        "message_id": reply,
        "webhook_id": hook.json()["id"],
        "checkpoint_id": turns.json()["turns"][0]["checkpoint_id"] if turns.status_code == 200 else "x",
    }
    return World(key_a=key_a, key_b=key_b, refs=refs)
