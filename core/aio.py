"""Small helpers for calling plugin code that may or may not be async."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def await_me_maybe(value: T | Awaitable[T] | Callable[[], T | Awaitable[T]]) -> T:
    """Resolve what a hook returned: a plain value, an awaitable, or a callable returning either.

    Hooks are called synchronously by pluggy; an implementation may return a
    coroutine (``async def`` hook) or a zero-argument callable, and the host
    awaits it here (the same convention as Datasette's ``await_me_maybe``).
    """
    if callable(value) and not isinstance(value, type):
        value = value()
    if inspect.isawaitable(value):
        return await value
    return value  # type: ignore[return-value]
