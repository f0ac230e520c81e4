"""botloom.testing: what a plugin author's tests need, without botloom's internals.

Installed with botloom as a pytest plugin (entry point ``pytest11``: ``botloom``), so its
fixtures (``botloom_harness``, ``botloom_bot``, ``scripted_model``, ``botloom_channel``...)
are there in any test of an environment with botloom; see
:mod:`botloom.testing.pytest_plugin` and docs/plugins.md ("Testing a plugin").

The names below are imported on first use, so ``import botloom.testing`` stays cheap:

* :class:`BotHarness`, :class:`TurnOutcome`, :class:`ToolCallRecord`: a bot spoken to turn by turn;
* :class:`ChannelHarness`, :class:`SigningRequest`: a channel driven through its routes over HTTP;
* :class:`ScriptedOpenAI`, :class:`ToolCall`, :class:`Reply`, :class:`HTTPError`, :func:`classification`:
  the scripted model and what it answers;
* conformance suites: :class:`ToolContract`, :class:`IntentContract`, :class:`ChannelContract`
  (with :class:`ChannelDriver`, :class:`ContractContext`, :class:`Outcome`), and the checks
  :func:`check_tool` and :func:`check_intent` they run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from botloom.testing.channel_contract import (
        GREETING,
        ChannelContract,
        ChannelDriver,
        ContractContext,
        Outcome,
        wait_until,
    )
    from botloom.testing.harness import (
        BotHarness,
        ChannelHarness,
        SigningRequest,
        ToolCallRecord,
        TurnOutcome,
        test_settings,
    )
    from botloom.testing.intent_contract import IntentContract, check_intent
    from botloom.testing.openai import HTTPError, Reply, ScriptedOpenAI, ToolCall, classification
    from botloom.testing.tool_contract import ToolContract, check_tool

_WHERE = {
    "BotHarness": "harness",
    "ChannelHarness": "harness",
    "SigningRequest": "harness",
    "ToolCallRecord": "harness",
    "TurnOutcome": "harness",
    "test_settings": "harness",
    "HTTPError": "openai",
    "Reply": "openai",
    "ScriptedOpenAI": "openai",
    "ToolCall": "openai",
    "classification": "openai",
    "GREETING": "channel_contract",
    "ChannelContract": "channel_contract",
    "ChannelDriver": "channel_contract",
    "ContractContext": "channel_contract",
    "Outcome": "channel_contract",
    "wait_until": "channel_contract",
    "ToolContract": "tool_contract",
    "check_tool": "tool_contract",
    "IntentContract": "intent_contract",
    "check_intent": "intent_contract",
}


def __getattr__(name: str) -> object:
    """Import a public name's module on first use."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'botloom.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(f"botloom.testing.{module}"), name)


__all__ = [
    "GREETING",
    "BotHarness",
    "ChannelContract",
    "ChannelDriver",
    "ChannelHarness",
    "ContractContext",
    "HTTPError",
    "IntentContract",
    "Outcome",
    "Reply",
    "ScriptedOpenAI",
    "SigningRequest",
    "ToolCall",
    "ToolCallRecord",
    "ToolContract",
    "TurnOutcome",
    "check_intent",
    "check_tool",
    "classification",
    "test_settings",
    "wait_until",
]
