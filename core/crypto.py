"""Encryption at rest for plugin secrets (and, with issue #8, checkpoints).

Uses Fernet (AES-128-CBC with HMAC-SHA256) from ``cryptography``. The key comes
from ``BOTLOOM_SECRET_KEY``: a Fernet key as it is, or any passphrase, which is
stretched into one. Without the setting, a key is generated once and kept in
``<data_dir>/secret.key`` (readable by its owner only).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import os
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

logger = logging.getLogger(__name__)

__all__ = ["Cipher", "InvalidToken", "load_cipher"]


class Cipher:
    """Encrypts and decrypts bytes with one Fernet key."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def encrypt(self, data: bytes) -> bytes:
        """Encrypt ``data``; the result carries its own timestamp and MAC."""
        return self._fernet.encrypt(data)

    def decrypt(self, token: bytes) -> bytes:
        """Decrypt ``token``; raises :class:`InvalidToken` if it was changed or made with another key."""
        return self._fernet.decrypt(token)


@functools.lru_cache(maxsize=8)
def key_from_setting(value: str) -> bytes:
    """A Fernet key from the ``BOTLOOM_SECRET_KEY`` value: a key as it is, or a stretched passphrase.

    Stretching takes about 0.1 s of CPU (PBKDF2, 200,000 rounds), so each passphrase is
    stretched once per process: a process that opens its services again (a test, a reload)
    does not pay it twice. The cache holds only what the process's cipher holds anyway.
    """
    raw = value.encode()
    try:
        if len(base64.urlsafe_b64decode(raw)) == 32:
            return raw
    except ValueError:
        pass
    digest = hashlib.pbkdf2_hmac("sha256", raw, b"botloom-secret-key", 200_000)
    return base64.urlsafe_b64encode(digest)


def load_cipher(secret_key: str | None, data_dir: Path) -> Cipher:
    """The deployment's cipher: from the setting, else from (or into) ``data_dir/secret.key``."""
    if secret_key:
        return Cipher(key_from_setting(secret_key))
    path = data_dir / "secret.key"
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        # Written under a temporary name and linked into place, so no process ever reads a half-written key.
        fd, name = tempfile.mkstemp(dir=data_dir, prefix=".secret.key.")  # private to this caller, mode 0600
        temporary = Path(name)
        with os.fdopen(fd, "wb") as fh:
            fh.write(Fernet.generate_key())
        try:
            os.link(temporary, path)  # fails if another process made the key first: then use theirs
            logger.warning(
                "BOTLOOM_SECRET_KEY is not set: generated %s; set the variable in production "
                "so every process shares one key",
                path,
            )
        except FileExistsError:
            pass
        finally:
            temporary.unlink(missing_ok=True)
    except OSError as exc:
        if not path.exists():
            raise RuntimeError(f"cannot create {path}: {exc}; set BOTLOOM_SECRET_KEY instead") from exc
    return Cipher(path.read_bytes().strip())
