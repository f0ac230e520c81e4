"""Which conversations a contact's address names (docs/data-rights.md): anonymous users, e-mail case, phone numbers.

The contact routes must find every conversation of one end user and none of anyone else's,
however the address is written, and an address every anonymous user shares names no one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from botloom.channels.email import EmailChannel
from botloom.channels.email.inbound import to_inbound
from botloom.channels.rest import RestChannel
from botloom.channels.twilio import TwilioChannel
from botloom.core.settings import Settings
from botloom.runtime.services import Services
from botloom.server.demo import DemoInfo
from tests.helpers import Chat
from tests.test_api_resources import api_client

EXPORT = "/api/v1/tenants/acme/contacts/export"
CONTACTS = "/api/v1/tenants/acme/contacts"


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async for c in api_client(settings, services):
        yield c


async def exported(client: httpx.AsyncClient, channel: str, address: str) -> list[str]:
    """The ids of the conversations the contact's export holds."""
    response = await client.get(EXPORT, params={"channel": channel, "address": address})
    assert response.status_code == 200, response.text
    return [c["conversation"]["id"] for c in response.json()["conversations"]]


async def anonymous_rest_chat(client: httpx.AsyncClient, demo: DemoInfo, text: str) -> str:
    """A REST conversation of a user the caller does not name; its id."""
    response = await client.post(
        "/api/v1/bots/acme/support/messages", json={"text": text}, headers={"Authorization": f"Bearer {demo.api_key}"}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["conversation_id"])


async def test_anonymous_rest_users_are_no_contact_and_each_is_reached_by_its_conversation(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    first = await anonymous_rest_chat(client, demo, "hello from anonymous one")
    second = await anonymous_rest_chat(client, demo, "hello from anonymous two")
    named = Chat(services, demo.bot, user="rest-user-not", channel="rest")
    await named.say("a named user")

    assert await exported(client, "rest", RestChannel.anonymous_sender or "") == [], "the shared address names no one"
    erased = await client.delete(CONTACTS, params={"channel": "rest", "address": "rest-user"})
    assert erased.status_code == 200, erased.text
    assert erased.json()["conversations"] == 0
    assert await services.store.conversations.get(demo.tenant.id, first) is not None
    assert await services.store.conversations.get(demo.tenant.id, second) is not None

    assert await exported(client, "rest", first) == [first], "one anonymous user's own conversation, by its id"
    gone = await client.delete(f"/api/v1/conversations/{first}")
    assert gone.status_code == 200, gone.text
    assert await services.store.conversations.get(demo.tenant.id, first) is None
    assert await exported(client, "rest", second) == [second], "the other anonymous user's stays"
    assert await exported(client, "rest", "rest-user-not") == [named.conversation_id]


@pytest.mark.parametrize(("channel", "anonymous"), [("webchat", "web-user"), ("langgraph", "langgraph-user")])
async def test_anonymous_web_chat_and_langgraph_users_are_no_contact(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo, channel: str, anonymous: str
) -> None:
    one, two = (Chat(services, demo.bot, user=anonymous, channel=channel) for _ in range(2))
    await one.say("hello")
    await two.say("hello")
    assert services.host.registry.channels[channel].anonymous_sender == anonymous
    assert await exported(client, channel, anonymous) == []
    assert await exported(client, channel, str(one.conversation_id)) == [one.conversation_id]


MAIL = b"""From: Ann <Ann@Example.COM>
To: support@acme.test
Subject: my order
Message-ID: <m1@example.com>

Where is my order?
"""


async def test_an_email_address_is_one_contact_whatever_its_case(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    inbound = to_inbound(MAIL, channel="email", own_address="support@acme.test")
    assert not isinstance(inbound, str)
    assert inbound.sender == "ann@example.com", "the channel stores the address in lower case"
    chat = Chat(services, demo.bot, user=inbound.sender, channel="email")
    await chat.say(inbound.text)

    for written in ("ann@example.com", "Ann@Example.COM", "ANN@EXAMPLE.COM", " ann@example.com "):
        assert await exported(client, "email", written) == [chat.conversation_id], written
    erased = await client.delete(CONTACTS, params={"channel": "email", "address": "Ann@Example.com"})
    assert erased.status_code == 200, erased.text
    assert erased.json()["conversations"] == 1
    assert await services.store.conversations.get(demo.tenant.id, str(chat.conversation_id)) is None


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("+15550100", "+15550100"),
        ("+1 555-0100", "+15550100"),
        ("+1 (555) 0100", "+15550100"),
        ("+1.555.0100", "+15550100"),
        ("whatsapp:+15550100", "whatsapp:+15550100"),
        ("WhatsApp:+1 555 0100", "whatsapp:+15550100"),
        (" +15550100 ", "+15550100"),
        ("ACME", "ACME"),  # an alphanumeric sender is left as it is
        ("15550100", "15550100"),  # no country code to assume: left as it is
    ],
)
def test_the_twilio_channel_writes_a_number_as_twilio_does(written: str, stored: str) -> None:
    assert TwilioChannel().contact_address(written) == stored


@pytest.mark.parametrize(
    ("written", "stored"),
    [("Ann@Example.COM", "ann@example.com"), (" ann@example.com\t", "ann@example.com"), ("no-at-sign", "no-at-sign")],
)
def test_the_email_channel_writes_an_address_in_lower_case(written: str, stored: str) -> None:
    assert EmailChannel().contact_address(written) == stored


async def test_a_phone_number_written_with_spaces_finds_its_contact(
    client: httpx.AsyncClient, services: Services, demo: DemoInfo
) -> None:
    chat = Chat(services, demo.bot, user="+15550100", channel="twilio")
    await chat.say("hello")
    assert await exported(client, "twilio", "+1 555-0100") == [chat.conversation_id]
