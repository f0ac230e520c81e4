"""Prometheus metrics of turns and plugins (HTTP request metrics come from Litestar's middleware)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

TURN_SECONDS = Histogram(
    "botloom_turn_seconds", "Time to run one turn, from lock to stored replies", ["channel"], buckets=LATENCY_BUCKETS
)
TURNS = Counter("botloom_turns_total", "Turns run, by outcome", ["channel", "outcome"])
PLUGIN_SECONDS = Histogram(
    "botloom_plugin_call_seconds", "Time of a plugin tool call", ["plugin", "tool"], buckets=LATENCY_BUCKETS
)
PLUGIN_ERRORS = Counter("botloom_plugin_errors_total", "Failed plugin calls (raised, timed out, refused)", ["plugin"])

# The agent desk (runtime/desk.py), per bot id and team ("" for none).
HANDOVERS = Counter(
    "botloom_handovers_total",
    "Handovers by what happened: opened, assigned, resolved, returned_to_bot, timed_out_to_bot",
    ["bot", "team", "outcome"],
)
HANDOVERS_WAITING = Gauge(
    "botloom_handovers_waiting", "Handovers waiting for an agent (from the database)", ["bot", "team"]
)
HANDOVER_FIRST_RESPONSE = Histogram(
    "botloom_handover_first_response_seconds",
    "Time from a handover's opening to its agent's first message",
    ["bot", "team"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 14_400),
)
HANDOVER_SLA_MISSED = Counter(
    "botloom_handover_sla_missed_total", "Handovers past an SLA deadline", ["bot", "team", "sla"]
)
