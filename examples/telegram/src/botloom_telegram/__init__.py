"""A Telegram channel for botloom: Bot API webhooks in, ``sendMessage`` out."""

from botloom_telegram.plugin import API_BASE, API_BASE_VARIABLE, TelegramChannel, TelegramConfig, TelegramPlugin

__all__ = ["API_BASE", "API_BASE_VARIABLE", "TelegramChannel", "TelegramConfig", "TelegramPlugin"]
__version__ = "0.1.0"
