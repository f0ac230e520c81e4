"""Checkpoint privacy: encryption at rest, and per-bot redaction of personal data.

* Encryption uses LangGraph's own ``EncryptedSerializer`` with a Fernet cipher
  from ``BOTLOOM_SECRET_KEY`` (``BOTLOOM_ENCRYPT_CHECKPOINTS=true``). The turn
  state keeps the user's words in dicts and lists, never as bare strings, so the
  Postgres saver writes them through the serializer rather than inline in its
  JSON column.
* Redaction wraps the saver: when a turn's config carries ``botloom_redact``
  (set by the runner for bots with ``redact_personal_data``), every string of the
  checkpoint is masked before it is written. The turn's replies are delivered
  from the run's own result, so the end user sees them unmasked, while later
  turns resume from the masked form.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from botloom.core.crypto import Cipher
from botloom.core.redact import redact

REDACT_FLAG = "botloom_redact"


class FernetCipher:
    """LangGraph's ``CipherProtocol`` over botloom's Fernet cipher."""

    name = "fernet"

    def __init__(self, cipher: Cipher) -> None:
        self.cipher = cipher

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        """Encrypt; returns the cipher's name and the token."""
        return self.name, self.cipher.encrypt(plaintext)

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        """Decrypt a token made by :meth:`encrypt`."""
        if ciphername != self.name:
            raise ValueError(f"checkpoint encrypted with unknown cipher {ciphername!r}")
        return self.cipher.decrypt(ciphertext)


def encrypting_serializer(cipher: Cipher) -> EncryptedSerializer:
    """A serializer that encrypts every value it writes (and still reads unencrypted ones)."""
    return EncryptedSerializer(FernetCipher(cipher), JsonPlusSerializer())


def scrub(value: Any, mask: Callable[[str], str] = redact) -> Any:
    """A copy of ``value`` with every string in it (in dicts, lists, tuples) masked."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: scrub(v, mask) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub(v, mask) for v in value)
    return value


class RedactingSaver(BaseCheckpointSaver[Any]):
    """Delegates to a saver, masking personal data in what it writes for turns that ask for it."""

    def __init__(self, inner: BaseCheckpointSaver[Any]) -> None:
        super().__init__(serde=inner.serde)
        self.inner = inner

    @staticmethod
    def _wants(config: RunnableConfig) -> bool:
        return bool((config.get("configurable") or {}).get(REDACT_FLAG))

    @property
    def config_specs(self) -> list[Any]:
        """The inner saver's config fields."""
        return list(self.inner.config_specs)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Read as the inner saver does."""
        return await self.inner.aget_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """List as the inner saver does."""
        async for item in self.inner.alist(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Write the checkpoint, its channel values masked when the turn asks for it."""
        if self._wants(config):
            checkpoint = {**checkpoint, "channel_values": scrub(dict(checkpoint["channel_values"]))}
        return await self.inner.aput(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """Write pending writes, masked when the turn asks for it."""
        if self._wants(config):
            writes = [(channel, scrub(value)) for channel, value in writes]
        await self.inner.aput_writes(config, writes, task_id, task_path)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Prune threads as the inner saver does (the memory saver can only delete whole threads)."""
        try:
            await self.inner.aprune(thread_ids, strategy=strategy)
        except NotImplementedError:
            if strategy == "delete":
                for thread in thread_ids:
                    await self.inner.adelete_thread(thread)

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete a thread's checkpoints."""
        await self.inner.adelete_thread(thread_id)

    def get_next_version(self, current: Any, channel: None) -> Any:
        """Versions as the inner saver makes them."""
        return self.inner.get_next_version(current, channel)
