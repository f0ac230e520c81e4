"""Prometheus metrics of turns and plugins (HTTP request metrics come from Litestar's middleware)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

TURN_SECONDS = Histogram(
    "botloom_turn_seconds", "Time to run one turn, from lock to stored replies", ["channel"], buckets=LATENCY_BUCKETS
)
TURNS = Counter("botloom_turns_total", "Turns run, by outcome", ["channel", "outcome"])
PLUGIN_SECONDS = Histogram(
    "botloom_plugin_call_seconds", "Time of a plugin tool call", ["plugin", "tool"], buckets=LATENCY_BUCKETS
)
PLUGIN_ERRORS = Counter("botloom_plugin_errors_total", "Failed plugin calls (raised, timed out, refused)", ["plugin"])
