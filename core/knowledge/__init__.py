"""Per-bot knowledge bases: ingestion of Markdown, text, HTML and CSV files, and hybrid search.

>>> kb = KnowledgeBase(db, LocalEmbedder())                      # default tunables
>>> kb = KnowledgeBase(db, LocalEmbedder(), KnowledgeConfig(max_chars=600))
>>> await kb.ingest(tenant_id, bot_id, "returns.md", text)
>>> passages = await kb.search(tenant_id, bot_id, "can I send back a jacket?")

The parts, each usable alone: ``ingestion.Ingestion``, ``search.HybridSearch``,
``documents.Documents``. See docs/knowledge.md.
"""

from botloom.core.knowledge.base import KnowledgeBase
from botloom.core.knowledge.config import KnowledgeConfig
from botloom.core.knowledge.parsing import IngestError
from botloom.core.knowledge.scope import UnknownBot
from botloom.core.knowledge.types import Document, IngestResult, Passage

__all__ = ["Document", "IngestError", "IngestResult", "KnowledgeBase", "KnowledgeConfig", "Passage", "UnknownBot"]
