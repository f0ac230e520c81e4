"""Writing and sending the bot's replies: threaded headers, a plain-text and an HTML part, SMTP with TLS."""

from __future__ import annotations

import email.utils
import html
import logging
import re
from email.message import EmailMessage
from typing import Any

from botloom import OutboundMessage, SendError, open_socket, server_name

from .config import EmailConfig
from .inbound import reply_message_id, thread_key

_URL = re.compile(r"https?://[^\s<>\"]+[^\s<>\".,;:!?)\]]")
_ID_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")


class EmailSendError(SendError):
    """The SMTP server did not take a reply; ``retryable`` says whether trying again can help."""


def html_body(text: str) -> str:
    """A simple HTML rendering of a plain-text reply: paragraphs, line breaks and links."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    rendered = []
    for paragraph in paragraphs:
        escaped = html.escape(paragraph)
        linked = _URL.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', escaped)
        rendered.append("<p>" + linked.replace("\n", "<br>\n") + "</p>")
    return (
        '<!DOCTYPE html>\n<html><body style="font-family: sans-serif; line-height: 1.5">\n'
        + "\n".join(rendered)
        + "\n</body></html>\n"
    )


def _one_line(value: str, limit: int = 500) -> str:
    return " ".join(str(value).split())[:limit]


def compose(message: OutboundMessage, config: EmailConfig) -> EmailMessage:
    """The reply as an e-mail in the thread it answers (``In-Reply-To``, ``References``, ``Re:`` subject)."""
    answered: dict[str, Any] = dict(message.metadata.get("reply_to") or {})
    domain = config.address.rpartition("@")[2]
    subject = _one_line(answered.get("subject") or "") or "Your message"
    references = [str(r) for r in answered.get("references") or [] if r][-50:]
    parent = str(answered.get("message_id") or "") or None
    thread = str(answered.get("thread") or f"mail:{thread_key(parent or message.conversation_id or subject)}")
    unique = _ID_SAFE.sub("-", message.idempotency_key or email.utils.make_msgid().strip("<>").partition("@")[0])
    mail = EmailMessage()
    mail["From"] = email.utils.formataddr((config.display_name or "", config.address))
    recipient = str(answered.get("from") or message.recipient)  # whoever wrote last in the thread
    mail["To"] = email.utils.formataddr((_one_line(answered.get("from_name") or "", 200), recipient))
    mail["Subject"] = f"Re: {subject}"
    mail["Date"] = email.utils.formatdate(localtime=False)
    mail["Message-ID"] = f"<{reply_message_id(thread, unique, domain)}>"
    if parent:
        mail["In-Reply-To"] = f"<{parent}>"
    if references:
        mail["References"] = " ".join(f"<{r}>" for r in references)
    mail["Auto-Submitted"] = "auto-replied"  # RFC 3834: other robots must not answer it
    mail.set_content(message.text)
    mail.add_alternative(html_body(message.text), subtype="html")
    return mail


async def send_mail(mail: EmailMessage, config: EmailConfig) -> None:
    """Hand a message to the bot's SMTP server; :class:`EmailSendError` says whether a retry may help.

    The connection goes to an address the endpoint guard checked (a refused one raises
    ``EndpointRefused``, a ``SendError`` that is not retryable); an error names the
    server's reply code, never its text (the tenant reads it; the log has it at DEBUG).
    SMTP cannot be asked whether an interrupted send went out: a retried reply keeps
    its Message-ID, so mail clients show it once.
    """
    import aiosmtplib

    try:
        sock = await open_socket(config.smtp_host, config.smtp_port, connect_timeout=config.timeout_seconds)
        await aiosmtplib.send(
            mail,
            hostname=server_name(config.smtp_host),
            sock=sock,
            username=config.smtp_username,
            password=config.smtp_password,
            use_tls=config.smtp_security == "tls",
            start_tls=config.smtp_security == "starttls",
            timeout=config.timeout_seconds,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [e.code for e in exc.recipients]
        logging.getLogger(__name__).debug("the SMTP server refused the recipients: %s", exc.recipients)
        raise EmailSendError(
            f"the SMTP server refused the recipient ({', '.join(str(c) for c in codes) or 'no reply'})",
            retryable=all(400 <= c < 500 for c in codes),
        ) from None
    except aiosmtplib.SMTPAuthenticationError as exc:
        logging.getLogger(__name__).debug("the SMTP server refused the login: %s %s", exc.code, exc.message)
        raise EmailSendError(
            f"the SMTP server refused the login ({exc.code}): check smtp_username and smtp_password",
            retryable=False,
        ) from None
    except aiosmtplib.SMTPResponseException as exc:
        logging.getLogger(__name__).debug("the SMTP server answered %s %s", exc.code, exc.message)
        raise EmailSendError(f"the SMTP server answered {exc.code}", retryable=not 500 <= exc.code < 600) from None
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        detail = str(exc) if isinstance(exc, OSError) else type(exc).__name__  # our own words, not the server's
        raise EmailSendError(
            f"could not reach the SMTP server {config.smtp_host}:{config.smtp_port}: {detail}", retryable=True
        ) from None
