"""botloom's pools turn ``standard_conforming_strings`` on, whatever the role or the database says.

The turn's end (``runtime/turns.py``) binds its values client-side into one string; a
``bytea[]`` (the checkpoint's blobs) quoted that way is read back intact only with
standard-conforming strings.
"""

from __future__ import annotations

from urllib.parse import quote

import psycopg

from botloom.core.storage.database import Database

BLOBS = [b"\x00\\x'\x01", b"plain", b"\\\\", b""]


async def test_a_connection_that_starts_without_standard_strings_gets_them(database_url: str) -> None:
    off = quote("-c standard_conforming_strings=off")
    url = f"{database_url}{'&' if '?' in database_url else '?'}options={off}"
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as raw:
        shown = await (await raw.execute("SHOW standard_conforming_strings")).fetchone()
        assert shown == ("off",), "the URL's option takes effect (else this test proves nothing)"
    db = await Database.open(url, max_size=1, migrate=False)
    try:
        async with db.connection() as conn:
            cur = await conn.execute("SHOW standard_conforming_strings")
            assert await cur.fetchone() == {"standard_conforming_strings": "on"}
            client = psycopg.AsyncClientCursor(conn)
            await client.execute(client.mogrify("SELECT %s::bytea[] AS blobs", (BLOBS,)))
            row = await client.fetchone()
            assert row is not None and [bytes(b) for b in row["blobs"]] == BLOBS
    finally:
        await db.close()
