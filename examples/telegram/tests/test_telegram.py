"""The Telegram channel through botloom's real webhook route and delivery queue (botloom.testing's harnesses).

Hostile input first: a missing or wrong secret, a body that is not an Update, an oversized
one; updates that are not text are acknowledged and ignored. Then replies: ``sendMessage``
to the chat, answering the user's message; Telegram's refusals, told apart from outages.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from botloom import OutboundMessage, SendError
from botloom.testing import ChannelHarness, wait_until
from telegram_standin import SECRET, TOKEN, TelegramStandIn, update

from botloom_telegram import API_BASE, TelegramChannel, TelegramConfig, TelegramPlugin

ROUTE = "/channels/telegram/{bot}"
LATIN1 = "s\xe9cret".encode("latin-1")


async def stored(channel: ChannelHarness) -> list[tuple[str, str, str]]:
    return await channel.transcript()


# --------------------------------------------------------------------------- inbound


async def test_a_text_message_is_answered_in_its_chat(
    botloom_channel: ChannelHarness, telegram: TelegramStandIn
) -> None:
    async with botloom_channel.workers():
        response = await botloom_channel.post(ROUTE, json=update("hello there", chat_id=4242, message_id=7))
        assert response.status_code == 200, response.text
        [sent] = await asyncio.to_thread(telegram.wait_for, 1)
    assert (sent.chat_id, sent.reply_to_message_id) == (4242, 7)
    transcript = await stored(botloom_channel)
    assert [(d, t) for d, t, _ in transcript] == [("inbound", "hello there"), ("outbound", sent.text)]
    await wait_until(lambda: _last_status(botloom_channel, "sent"), what="the reply recorded as sent")


async def _last_status(channel: ChannelHarness, status: str) -> bool:
    transcript = await channel.transcript()
    return bool(transcript) and transcript[-1][2] == status


async def test_telegram_retrying_an_update_runs_no_second_turn(
    botloom_channel: ChannelHarness, telegram: TelegramStandIn
) -> None:
    async with botloom_channel.workers():
        for _ in range(2):
            response = await botloom_channel.post(ROUTE, json=update("hi", update_id=99))
            assert response.status_code == 200, response.text
        await asyncio.to_thread(telegram.wait_for, 1)
        await wait_until(lambda: _last_status(botloom_channel, "sent"), what="the reply recorded as sent")
    assert [d for d, _, _ in await stored(botloom_channel)] == ["inbound", "outbound"]
    assert len(telegram.sent) == 1


async def test_a_missing_secret_is_401_and_a_wrong_one_403(botloom_channel: ChannelHarness) -> None:
    missing = await botloom_channel.post(ROUTE, json=update("hello"), signed=False)
    assert missing.status_code == 401, missing.text
    wrong = await botloom_channel.post(ROUTE, json=update("hello"), forged=True)
    assert wrong.status_code == 403, wrong.text
    almost = await botloom_channel.post(
        ROUTE, json=update("hello"), signed=False, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET[:-1]}
    )
    assert almost.status_code == 403, almost.text
    non_ascii = await botloom_channel.post(
        ROUTE,
        json=update("hello"),
        signed=False,
        headers={"X-Telegram-Bot-Api-Secret-Token": LATIN1},
    )
    assert non_ascii.status_code in (400, 403), non_ascii.text
    assert await stored(botloom_channel) == []


MALFORMED = [
    b"",
    b"{not json",
    b"[1, 2, 3]",
    b'{"message": {"message_id": 1, "chat": {"id": 1}, "text": "no update_id"}}',
    b'{"update_id": "one"}',
    b'{"update_id": 1, "message": {"message_id": 1, "text": "no chat"}}',
    b'{"update_id": 1, "message": {"message_id": 1, "chat": {"id": "x"}, "text": "hi"}}',
    b'{"update_id": 1, "message": {"message_id": 1, "chat": {"id": 1}, "text": 42}}',
    b'{"update_id": 1, "message": {"message_id": "one", "chat": {"id": 1}, "text": "hi"}}',
]


async def test_a_body_that_is_not_an_update_is_400_and_an_oversized_one_413(botloom_channel: ChannelHarness) -> None:
    for body in MALFORMED:
        response = await botloom_channel.post(ROUTE, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, (body, response.status_code, response.text)
    huge = json.dumps(update("x" * (TelegramChannel.max_request_bytes + 1))).encode()
    response = await botloom_channel.post(ROUTE, content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert await stored(botloom_channel) == []


NOT_TEXT = [
    update(None),  # a photo
    update("   "),  # blank text
    {"update_id": 5, "edited_message": update("edited")["message"]},
    {"update_id": 6, "callback_query": {"id": "1", "from": {"id": 1, "is_bot": False}, "data": "x"}},
    {"update_id": 7, "my_chat_member": {"chat": {"id": 1, "type": "private"}}},
]


async def test_updates_that_are_not_text_are_acknowledged_and_ignored(
    botloom_channel: ChannelHarness, telegram: TelegramStandIn
) -> None:
    for body in NOT_TEXT:
        response = await botloom_channel.post(ROUTE, json=body)
        assert response.status_code == 200, (body, response.text)
    assert await stored(botloom_channel) == []
    assert telegram.calls == 0


async def test_another_bot_or_a_bot_without_the_channel_is_refused(botloom_channel: ChannelHarness) -> None:
    unknown = await botloom_channel.post(ROUTE, json=update("hello"), bot="test/nobody")
    assert unknown.status_code == 404, unknown.text
    await botloom_channel.harness.configure("telegram", {"bot_token": TOKEN, "webhook_secret": SECRET}, enabled=False)
    disabled = await botloom_channel.post(
        ROUTE, json=update("hello"), signed=False, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
    )
    assert disabled.status_code in (403, 404), disabled.text
    assert await stored(botloom_channel) == []


async def test_one_tenants_secret_opens_no_other_tenants_bot(
    botloom_channel: ChannelHarness, botloom_demo: Any
) -> None:
    """Two tenants' bots on Telegram: each webhook takes its own bot's secret only, each API key its own bot."""
    other_secret = "the-other-tenants-webhook-secret"
    enabled = await botloom_channel.client.put(
        "/api/v1/bots/acme/support/plugins/telegram",
        json={"enabled": True, "config": {"bot_token": TOKEN, "webhook_secret": other_secret}},
        headers={"Authorization": f"Bearer {botloom_demo.api_key}"},
    )
    assert enabled.status_code == 200, enabled.text
    crossed = await botloom_channel.post(ROUTE, json=update("hello"), bot="acme/support")  # signed with test/bot's
    assert crossed.status_code == 403, crossed.text
    harness = botloom_channel.harness
    reconfigured = await botloom_channel.client.put(
        "/api/v1/bots/acme/support/plugins/telegram",
        json={"enabled": True, "config": {"bot_token": TOKEN, "webhook_secret": SECRET}},
        headers={"Authorization": f"Bearer {harness.api_key}"},
    )
    assert reconfigured.status_code in (403, 404), reconfigured.text
    assert await stored(botloom_channel) == []


# --------------------------------------------------------------------------- configuration


BAD_CONFIGS = [
    # A tenant cannot point the channel (and the bot's token) at a server of its choosing.
    ("api_base", "http://127.0.0.1:1"),
    ("bot_token", "123:short"),
    ("bot_token", "123456789:AAHtestTOKENtestTOKEN/../../evil?x="),
    ("webhook_secret", "short"),
    ("webhook_secret", "spaces are not allowed in it"),
]


async def test_a_bad_config_is_refused_naming_the_field(botloom_channel: ChannelHarness) -> None:
    await botloom_channel.start()
    harness = botloom_channel.harness
    for field, value in BAD_CONFIGS:
        config = {"bot_token": TOKEN, "webhook_secret": SECRET, field: value}
        response = await botloom_channel.client.put(
            f"/api/v1/bots/{harness.bot_path}/plugins/telegram",
            json={"enabled": True, "config": config},
            headers={"Authorization": f"Bearer {harness.api_key}"},
        )
        assert response.status_code == 400, (field, value, response.text)
        assert field in response.text, (field, response.text)
        assert field == "api_base" or "evil" not in response.text, "a secret's value is never echoed"


def test_the_api_base_is_telegrams_unless_the_operator_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    from botloom_telegram import plugin

    monkeypatch.delenv("BOTLOOM_TELEGRAM_API_BASE")
    [channel] = plugin.register_channels()
    assert channel.api_base == API_BASE == "https://api.telegram.org"
    monkeypatch.setenv("BOTLOOM_TELEGRAM_API_BASE", "http://127.0.0.1:8081/")
    [channel] = plugin.register_channels()
    assert channel.api_base == "http://127.0.0.1:8081"
    assert TelegramPlugin(api_base="http://10.0.0.5:8081").channel.api_base == "http://10.0.0.5:8081"
    with pytest.raises(ValueError, match="http"):
        TelegramChannel("file:///etc/passwd")


# --------------------------------------------------------------------------- outbound


def reply(text: str = "hi", recipient: str = "4242", reply_to: int | None = 7) -> OutboundMessage:
    metadata: dict[str, Any] = {"reply_to": {"message_id": reply_to, "chat_id": int(recipient)}} if reply_to else {}
    return OutboundMessage(channel="telegram", text=text, recipient=recipient, metadata=metadata)


CONFIG = TelegramConfig(bot_token=TOKEN, webhook_secret=SECRET)
# The tests that call send() directly ask for botloom_services: the test deployment's endpoint policy
# (loopback allowed, where the stand-in listens) is in force while botloom's services are open.


async def test_send_answers_telegrams_id_and_tells_refusals_from_outages(
    telegram: TelegramStandIn, botloom_services: object
) -> None:
    channel = TelegramChannel(telegram.url)
    assert await channel.send(reply("first"), CONFIG) == "1001", "Telegram's message id"
    assert await channel.send(reply("second", reply_to=None), CONFIG) == "1002"
    assert [(s.chat_id, s.text, s.reply_to_message_id) for s in telegram.sent] == [
        (4242, "first", 7),
        (4242, "second", None),
    ]
    telegram.reset()

    for status, retryable in [(429, True), (500, True), (502, True), (400, False), (403, False)]:
        telegram.fail(1, status=status, error_code=status)
        with pytest.raises(SendError) as caught:
            await channel.send(reply(), CONFIG)
        assert caught.value.retryable is retryable, status
        assert str(caught.value) == f"Telegram's Bot API answered {status} (error_code {status}) to sendMessage"
        assert "secret detail" not in str(caught.value), "Telegram's description is never quoted"

    # A wrong token (Telegram answers 401 or 404): not retried, and the token is never shown.
    wrong = TelegramConfig(bot_token="987654321:AAHsomeoneELSEStokenXXXXXXXXXXXXXXX", webhook_secret=SECRET)
    with pytest.raises(SendError) as caught:
        await channel.send(reply(), wrong)
    assert caught.value.retryable is False
    assert "987654321" not in str(caught.value)

    # No connection: retryable; neither the URL nor the token shows, nor does aiohttp's error chained to it.
    with pytest.raises(SendError) as caught:
        await TelegramChannel("http://127.0.0.1:9", timeout=5).send(reply(), CONFIG)
    assert caught.value.retryable is True
    assert TOKEN not in str(caught.value)
    assert "127.0.0.1" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    assert telegram.sent == []


async def test_a_refused_reply_is_a_dead_letter_without_telegrams_words(
    botloom_channel: ChannelHarness, telegram: TelegramStandIn
) -> None:
    telegram.fail(1, status=403, error_code=403)  # "Forbidden: bot was blocked by the user"
    async with botloom_channel.workers():
        response = await botloom_channel.post(ROUTE, json=update("hello"))
        assert response.status_code == 200, response.text
        await wait_until(lambda: _last_status(botloom_channel, "failed"), what="the reply given up on")
    harness = botloom_channel.harness
    letters = await botloom_channel.client.get(
        f"/api/v1/bots/{harness.bot_path}/dead-letters", headers={"Authorization": f"Bearer {harness.api_key}"}
    )
    assert letters.status_code == 200, letters.text
    [letter] = letters.json()["items"] if isinstance(letters.json(), dict) else letters.json()
    assert letter["attempts"] == 1, "a refusal is not retried"
    assert "403" in letter["error"] and "secret detail" not in letter["error"] and TOKEN not in letter["error"]
    assert telegram.sent == []


async def test_a_failing_api_is_retried_until_the_reply_goes_out(
    botloom_channel: ChannelHarness, telegram: TelegramStandIn
) -> None:
    telegram.fail(2, status=502, error_code=502)
    async with botloom_channel.workers():
        response = await botloom_channel.post(ROUTE, json=update("hello"))
        assert response.status_code == 200, response.text
        await asyncio.to_thread(telegram.wait_for, 1)
        await wait_until(lambda: _last_status(botloom_channel, "sent"), what="the reply recorded as sent")
    assert telegram.calls == 3
    assert len(telegram.sent) == 1


# --------------------------------------------------------------------------- installed like a stranger's plugin


def test_botloom_lists_the_installed_channel(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTLOOM_")}
    result = subprocess.run(
        [sys.executable, "-m", "botloom", "plugins", "list", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    plugins = {info["name"]: info for info in json.loads(result.stdout)["plugins"]}
    info = plugins["telegram"]
    assert (info["status"], info["source"], info["distribution"]) == (
        "loaded",
        "pip:botloom-telegram",
        "botloom-telegram",
    )
    assert info["supports"] == "<0.2,>=0.1"
    assert info["channels"] == ["telegram"]
    assert info["problems"] == []
    assert info["config_schema"]["$defs"]["TelegramConfig"]["required"] == ["bot_token", "webhook_secret"]
