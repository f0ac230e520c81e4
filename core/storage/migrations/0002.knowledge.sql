-- botloom knowledge base: documents, their chunks (pgvector + full text), and an embedding cache.
-- Every row carries tenant_id and bot_id and references its bot through (tenant_id, bot_id),
-- so deleting a bot (or its tenant) removes its knowledge, and no row can point across tenants.
--
-- Vectors: embedders differ in dimension, so `embedding` is an unsized `vector` and each row
-- records `embedder` and `dims`. Search compares only rows of the current embedder. Approximate
-- (HNSW) indexes are partial indexes over the rows of one bot and one embedder, created by
-- the application (botloom.core.knowledge.index) once a bot has enough chunks to need one,
-- in the form: CREATE INDEX CONCURRENTLY knowledge_hnsw_HASH ON knowledge_chunks
-- USING hnsw ((embedding::vector(DIMS)) vector_cosine_ops) WHERE bot_id = BOT AND
-- embedder = NAME AND dims = DIMS.
-- Smaller bots are searched exactly through knowledge_chunks_bot, which is both faster at
-- that size and free of the recall loss of filtering a shared HNSW graph by tenant and bot.

CREATE TABLE knowledge_documents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL,
    bot_id uuid NOT NULL,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 1000),
    content_type text NOT NULL,
    content_hash text NOT NULL,          -- SHA-256 of the decoded text
    pipeline text NOT NULL,              -- parser and chunker settings: a change re-chunks on ingest
    embedder text NOT NULL,
    dims integer NOT NULL CHECK (dims > 0),
    chunks integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (bot_id, name),
    UNIQUE (tenant_id, bot_id, id),
    FOREIGN KEY (tenant_id, bot_id) REFERENCES bots (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE knowledge_chunks (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL,
    bot_id uuid NOT NULL,
    document_id uuid NOT NULL,
    position integer NOT NULL CHECK (position >= 0),
    title text NOT NULL,
    text text NOT NULL,
    content_hash text NOT NULL,          -- SHA-256 of title and text as embedded
    embedder text NOT NULL,
    dims integer NOT NULL,
    embedding vector NOT NULL CHECK (vector_dims(embedding) = dims),
    search tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', title), 'A') || setweight(to_tsvector('english', text), 'B')
    ) STORED,
    UNIQUE (document_id, position),
    FOREIGN KEY (tenant_id, bot_id, document_id)
        REFERENCES knowledge_documents (tenant_id, bot_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, bot_id) REFERENCES bots (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX knowledge_chunks_bot ON knowledge_chunks (bot_id, embedder, dims);
CREATE INDEX knowledge_chunks_search ON knowledge_chunks USING gin (search);

-- Embeddings by content: re-ingesting a document, or another document with the same
-- passage, never calls the embedder twice for the same text.
CREATE TABLE knowledge_embeddings (
    tenant_id uuid NOT NULL,
    bot_id uuid NOT NULL,
    embedder text NOT NULL,
    dims integer NOT NULL,
    content_hash text NOT NULL,
    embedding vector NOT NULL CHECK (vector_dims(embedding) = dims),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bot_id, embedder, dims, content_hash),
    FOREIGN KEY (tenant_id, bot_id) REFERENCES bots (tenant_id, id) ON DELETE CASCADE
);

-- Document frequency of each lexeme in a bot's chunks, kept up to date by ingestion and
-- deletion. Full-text search drops the commonest query terms until the rest match a bounded
-- number of chunks, so its cost does not grow with the size of the knowledge base.
CREATE TABLE knowledge_terms (
    tenant_id uuid NOT NULL,
    bot_id uuid NOT NULL,
    lexeme text NOT NULL,
    df integer NOT NULL,
    PRIMARY KEY (bot_id, lexeme),
    FOREIGN KEY (tenant_id, bot_id) REFERENCES bots (tenant_id, id) ON DELETE CASCADE
);
