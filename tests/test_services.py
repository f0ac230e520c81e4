"""The test services are real: PostgreSQL + pgvector, Redis with search and JSON,
and an OpenAI-compatible server driven through the real langchain-openai client."""

from __future__ import annotations

import http.client
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import openai
import psycopg
import pytest
import redis
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel, SecretStr
from redis.commands.search.field import TextField
from redis.commands.search.index_definition import IndexDefinition, IndexType

from tests.servers import (
    HTTPError,
    Reply,
    RunningPostgres,
    RunningRedis,
    ScriptedOpenAI,
    ToolCall,
    embedding_vector,
    start_postgres,
    start_redis,
)

# Fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPostgres]:
    """PostgreSQL with pgvector; BOTLOOM_TEST_DATABASE_URL selects an external server."""
    if url := os.environ.get("BOTLOOM_TEST_DATABASE_URL"):
        yield RunningPostgres.external(url)
        return
    with start_postgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRedis]:
    """Redis with RediSearch and RedisJSON; BOTLOOM_TEST_REDIS_URL selects an external one."""
    if url := os.environ.get("BOTLOOM_TEST_REDIS_URL"):
        yield RunningRedis.external(url)
        return
    with start_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def openai_server() -> Iterator[ScriptedOpenAI]:
    """The scripted OpenAI-compatible server shared by the session."""
    with ScriptedOpenAI() as server:
        yield server


@pytest.fixture
def llm_server(openai_server: ScriptedOpenAI) -> Iterator[ScriptedOpenAI]:
    """The scripted server, reset for this test; fails the test on unused script or errors."""
    openai_server.reset()
    yield openai_server
    assert openai_server.errors == []
    assert openai_server.pending == 0, "scripted responses were left unused"


def chat(server: ScriptedOpenAI, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(model="gpt-4o-mini", api_key=SecretStr("test"), base_url=server.base_url, **kwargs)


# PostgreSQL ------------------------------------------------------------------------


def test_postgres_pgvector_nearest_neighbours(pg: RunningPostgres) -> None:
    name = f"svc_{uuid.uuid4().hex[:12]}"
    url = pg.create_database(name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute("CREATE TABLE items (name text PRIMARY KEY, embedding vector(3))")
            conn.execute("INSERT INTO items VALUES ('far', '[9,9,9]'), ('near', '[1,1,1]'), ('mid', '[3,3,3]')")
            rows = conn.execute("SELECT name FROM items ORDER BY embedding <-> %s::vector", ("[0,0,0]",)).fetchall()
            assert [row[0] for row in rows] == ["near", "mid", "far"]
    finally:
        pg.drop_database(name)


def test_postgres_is_a_fast_tcp_server(pg: RunningPostgres) -> None:
    if pg.data_dir is None:
        pytest.skip("external server: settings are not ours")
    with psycopg.connect(pg.url) as conn:
        settings = {
            key: conn.execute(f"SHOW {key}").fetchone()[0]  # type: ignore[index]
            for key in ("server_version", "fsync", "max_connections", "listen_addresses")
        }
    assert settings["server_version"].startswith("16.")
    assert settings["fsync"] == "off"
    assert settings["max_connections"] == "300"
    assert settings["listen_addresses"] == "127.0.0.1"


def test_postgres_stop_ends_the_server(tmp_path: Path) -> None:
    server = start_postgres(tmp_path)
    assert server.pid is not None
    pid = server.pid
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.url, connect_timeout=2)


# Redis -----------------------------------------------------------------------------


@pytest.fixture
def redis_client(redis_server: RunningRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


def test_redis_search_module_is_loaded(redis_client: redis.Redis) -> None:
    indexes = redis_client.execute_command("FT._LIST")  # type: ignore[no-untyped-call]
    assert isinstance(indexes, list)


def test_redis_json_round_trip_and_search(redis_client: redis.Redis) -> None:
    prefix = f"svc:{uuid.uuid4().hex[:8]}:"
    index = f"{prefix}idx"
    redis_client.ft(index).create_index(
        [TextField("$.name", as_name="name")],
        definition=IndexDefinition(prefix=[prefix], index_type=IndexType.JSON),  # type: ignore[no-untyped-call]
    )
    document: dict[str, Any] = {"name": "Ada Lovelace", "tags": ["math", "engines"], "born": 1815}
    redis_client.json().set(f"{prefix}1", "$", document)
    assert redis_client.json().get(f"{prefix}1") == document
    result = redis_client.ft(index).search("@name:Lovelace")
    assert [doc.id for doc in result.docs] == [f"{prefix}1"]
    redis_client.ft(index).dropindex(delete_documents=True)


def test_redis_flushdb_with_json_keys_keeps_the_server_up(redis_client: redis.Redis) -> None:
    for number in range(50):
        redis_client.json().set(f"svc:flush:{number}", "$", {"n": number, "items": [1, 2, 3]})
    redis_client.flushdb()
    assert redis_client.ping() is True
    assert redis_client.dbsize() == 0


def test_redis_stop_ends_the_server(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    assert server.pid is not None
    pid = server.pid
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# Scripted OpenAI -------------------------------------------------------------------


def test_plain_reply_with_usage(llm_server: ScriptedOpenAI) -> None:
    llm_server.script("Hello from the script")
    message = chat(llm_server, temperature=0.2).invoke([HumanMessage("hi")])

    assert isinstance(message, AIMessage)
    assert message.content == "Hello from the script"
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.response_metadata["model_name"] == "gpt-4o-mini"
    usage = message.usage_metadata
    assert usage is not None
    assert usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    (request,) = llm_server.chat_requests
    assert request["model"] == "gpt-4o-mini"
    assert request["temperature"] == 0.2
    assert request["messages"] == [{"role": "user", "content": "hi"}]


def test_default_reply_echoes_and_callables_see_the_request(llm_server: ScriptedOpenAI) -> None:
    llm_server.script(lambda request: f"{len(request['messages'])} message(s)")
    model = chat(llm_server)
    assert model.invoke("count me").content == "1 message(s)"
    assert model.invoke("echo this").content == "echo this"


def test_streamed_reply_with_usage(llm_server: ScriptedOpenAI) -> None:
    llm_server.script("one two three four")
    chunks = list(chat(llm_server).stream("hi", stream_usage=True))

    assert len(chunks) > 4
    message = sum(chunks[1:], chunks[0])
    assert isinstance(message, AIMessageChunk)
    assert message.content == "one two three four"
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_tokens"] > 0
    (request,) = llm_server.chat_requests
    assert request["stream"] is True
    assert request["stream_options"] == {"include_usage": True}


class GetWeather(BaseModel):
    """Get the current weather in a city."""

    city: str


def test_tool_call(llm_server: ScriptedOpenAI) -> None:
    llm_server.script(ToolCall("GetWeather", {"city": "Paris"}, id="call_1"))
    message = chat(llm_server).bind_tools([GetWeather]).invoke("Weather in Paris?")

    assert isinstance(message, AIMessage)
    assert message.tool_calls == [
        {"name": "GetWeather", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"}
    ]
    assert message.response_metadata["finish_reason"] == "tool_calls"
    (request,) = llm_server.chat_requests
    assert [tool["function"]["name"] for tool in request["tools"]] == ["GetWeather"]


def test_streamed_parallel_tool_calls(llm_server: ScriptedOpenAI) -> None:
    llm_server.script(
        Reply(tool_calls=[ToolCall("GetWeather", {"city": "Oslo"}), ToolCall("GetWeather", {"city": "Rome"})])
    )
    chunks = list(chat(llm_server).bind_tools([GetWeather]).stream("Oslo and Rome?"))
    message = sum(chunks[1:], chunks[0])

    assert isinstance(message, AIMessageChunk)
    assert [call["args"] for call in message.tool_calls] == [{"city": "Oslo"}, {"city": "Rome"}]


class Movie(BaseModel):
    title: str
    year: int


def test_structured_output_json_schema(llm_server: ScriptedOpenAI) -> None:
    llm_server.script({"title": "Alien", "year": 1979})
    movie = chat(llm_server).with_structured_output(Movie).invoke("A 1979 space horror film")

    assert movie == Movie(title="Alien", year=1979)
    (request,) = llm_server.chat_requests
    assert request["response_format"]["type"] == "json_schema"
    assert request["response_format"]["json_schema"]["name"] == "Movie"


class Verdict(TypedDict):
    """Whether the claim holds."""

    holds: bool
    reason: str


def test_structured_output_function_calling(llm_server: ScriptedOpenAI) -> None:
    llm_server.script(ToolCall("Verdict", {"holds": True, "reason": "checked"}))
    structured = chat(llm_server).with_structured_output(Verdict, method="function_calling")

    assert structured.invoke("Is water wet?") == {"holds": True, "reason": "checked"}


def test_client_retries_after_http_500(llm_server: ScriptedOpenAI) -> None:
    llm_server.script(HTTPError(500, "overloaded"), "recovered")
    assert chat(llm_server, max_retries=1).invoke("hi").content == "recovered"
    assert len(llm_server.chat_requests) == 2


def test_http_error_surfaces_without_retries(llm_server: ScriptedOpenAI) -> None:
    llm_server.script(HTTPError(429, "slow down"))
    with pytest.raises(openai.RateLimitError, match="slow down"):
        chat(llm_server, max_retries=0).invoke("hi")


def test_broken_script_is_reported_not_retried(llm_server: ScriptedOpenAI) -> None:
    def broken(request: dict[str, Any]) -> str:
        raise ValueError("bug in the test script")

    llm_server.script(broken)
    with pytest.raises(openai.InternalServerError, match="bug in the test script"):
        chat(llm_server, max_retries=2).invoke("hi")
    assert len(llm_server.chat_requests) == 1
    assert "ValueError: bug in the test script" in llm_server.errors.pop()


@pytest.mark.asyncio
async def test_async_invoke_and_stream(llm_server: ScriptedOpenAI) -> None:
    llm_server.script("async reply", "streamed async reply")
    model = chat(llm_server)

    assert (await model.ainvoke("hi")).content == "async reply"
    pieces = [chunk.content async for chunk in model.astream("hi")]
    assert "".join(str(piece) for piece in pieces) == "streamed async reply"


def test_embeddings_are_deterministic(llm_server: ScriptedOpenAI) -> None:
    embeddings = OpenAIEmbeddings(
        model="text-embedding-3-small",
        api_key=SecretStr("test"),
        base_url=llm_server.base_url,
        check_embedding_ctx_length=False,
    )
    assert embeddings.embed_documents(["alpha", "beta"]) == [
        embedding_vector("alpha"),
        embedding_vector("beta"),
    ]
    assert embeddings.embed_query("alpha") == embedding_vector("alpha")
    assert embedding_vector("alpha") != embedding_vector("beta")
    assert llm_server.embedding_requests[0]["input"] == ["alpha", "beta"]


def test_embedding_dimensions_and_float_format(llm_server: ScriptedOpenAI) -> None:
    with openai.OpenAI(api_key="test", base_url=llm_server.base_url) as client:
        response = client.embeddings.create(
            model="text-embedding-3-small", input="gamma", dimensions=16, encoding_format="float"
        )
        models = [model.id for model in client.models.list()]
    assert response.data[0].embedding == embedding_vector("gamma", 16)
    assert response.usage.prompt_tokens > 0
    assert "gpt-4o-mini" in models


def test_stop_closes_keep_alive_connections() -> None:
    server = ScriptedOpenAI()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    connection.request("GET", "/v1/models")
    assert connection.getresponse().read()
    server.stop()  # must not wait for the idle keep-alive connection
    connection.close()
    assert not [t for t in threading.enumerate() if t.name.startswith(f"scripted-openai-{server.port}")]
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection("127.0.0.1", server.port, timeout=5).connect()
