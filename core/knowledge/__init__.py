"""Per-bot knowledge bases: ingestion of Markdown, text, HTML and CSV files, and hybrid search.

>>> kb = KnowledgeBase(db, LocalEmbedder())
>>> await kb.ingest(tenant_id, bot_id, "returns.md", text)
>>> passages = await kb.search(tenant_id, bot_id, "can I send back a jacket?")

See docs/knowledge.md.
"""

from botloom.core.knowledge.base import KnowledgeBase, UnknownBot
from botloom.core.knowledge.parsing import IngestError
from botloom.core.knowledge.types import Document, IngestResult, Passage

__all__ = ["Document", "IngestError", "IngestResult", "KnowledgeBase", "Passage", "UnknownBot"]
