"""The `chatee` command. Server: dev, api, worker, migrate, devtools run Chatee. Client:
login, agents, chat talk to a running Chatee server from the terminal."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Annotated, Literal

import typer

from chatee import ids
from chatee.config import (
    ConfigError,
    Settings,
    load_settings,
    require_api_secrets,
    ws_protocol_limit,
)
from chatee.logging import register_secret, setup_logging

SERVER = "Server: run Chatee"
CLIENT = "Client: talk to a Chatee server"

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
devtools = typer.Typer(
    no_args_is_help=True,
    help="Stand-ins for an LLM and an MCP server, to try Chatee offline (the suite uses them).",
)
app.add_typer(devtools, name="devtools", rich_help_panel=SERVER)


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        typer.echo(f"configuration error:\n{exc}", err=True)
        raise typer.Exit(2) from None
    setup_logging(settings.log_level, settings.log_json)
    ids.configure(settings.node_id)
    for secret in (
        settings.jwt_secret,
        settings.llm_openai_api_key,
        settings.llm_deepseek_api_key,
        settings.mysql_password,
        settings.redis_password,
        *(provider.api_key for provider in settings.llm_providers.values()),
    ):
        register_secret(secret.get_secret_value() if secret else None)
    return settings


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"chatee: {exc}", err=True)
    return typer.Exit(2)


@app.command(rich_help_panel=SERVER)
def api(
    host: Annotated[str | None, typer.Option(help="default: CHATEE_HTTP_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: CHATEE_HTTP_PORT")] = None,
) -> None:
    """Run the HTTP/SSE API against the configured database, Redis and Temporal."""
    import uvicorn

    settings = _settings()
    try:
        require_api_secrets(settings)
    except ConfigError as exc:
        raise _fail(exc) from None
    uvicorn.run(
        "api.app:app_from_config",  # by name: the core imports no surface
        factory=True,
        host=host or settings.http_host,
        port=port or settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        ws_max_size=ws_protocol_limit(settings),  # bigger frames close the socket (1009)
        ws_per_message_deflate=False,  # zlib state per socket costs memory; frames are small
    )


@app.command(rich_help_panel=SERVER)
def worker(
    queue: Annotated[
        list[str] | None,
        typer.Option(help="agents, llm, tools, rag or messages; repeat for several; default all"),
    ] = None,
) -> None:
    """Run Temporal workers for some or all task queues."""
    from workers.main import QUEUES, run_workers

    settings = _settings()
    chosen = queue or list(QUEUES)
    unknown = [q for q in chosen if q not in QUEUES]
    if unknown:
        raise _fail(ValueError(f"unknown queue(s) {unknown}; choose from {list(QUEUES)}"))
    try:
        asyncio.run(run_workers(settings, chosen))
    except ConfigError as exc:
        raise _fail(exc) from None


@app.command(rich_help_panel=SERVER)
def migrate() -> None:
    """Apply database migrations (Alembic) to CHATEE_DATABASE_URL."""
    from chatee.migrate import upgrade

    settings = _settings()
    upgrade(settings.sqlalchemy_url())
    typer.echo("database is at the latest migration")


@app.command(rich_help_panel=SERVER)
def dev() -> None:
    """Run everything: embedded Temporal (+ Web UI), Redis and SQLite, the API and all workers."""
    from chatee.devstack import DevStack

    settings = _settings()
    stack = DevStack(settings)
    code = 0
    try:
        stack.start()
        typer.echo("chatee dev is up:")
        for name, url in stack.urls.items():
            typer.echo(f"  {name:<12} {url}")
        typer.echo("Ctrl-C stops everything.")
        sys.stdout.flush()
        code = stack.wait()
    except ConfigError as exc:
        typer.echo(f"chatee dev: {exc}", err=True)
        code = 2
    finally:
        stack.stop()
    raise typer.Exit(code)


# -- client commands: thin wrappers over chatee.client.terminal ---------------------------------


def _client_call(call: Callable[[], str | None]) -> None:
    from chatee.client.terminal import Failed

    try:
        said = call()
    except Failed as exc:
        typer.echo(f"chatee: {exc}", err=True)
        raise typer.Exit(1) from None
    if said:
        typer.echo(said)


@app.command(rich_help_panel=CLIENT)
def login(
    username: Annotated[str, typer.Option(prompt=True)],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, envvar="CHATEE_PASSWORD")],
    server: Annotated[
        str, typer.Option(prompt=True, help="the server's URL", envvar="CHATEE_SERVER")
    ] = "http://127.0.0.1:8080",
    register: Annotated[bool, typer.Option(help="create the account first")] = False,
) -> None:
    """Sign in to a Chatee server; the login is kept in ~/.config/chatee/client.json (0600)."""
    from chatee.client import terminal

    _client_call(lambda: terminal.login(server, username, password, register))


@app.command(rich_help_panel=CLIENT)
def logout() -> None:
    """End the saved login (on the server too) and forget it."""
    from chatee.client import terminal

    _client_call(terminal.logout)


@app.command(rich_help_panel=CLIENT)
def agents() -> None:
    """List your agents: name, model, id."""
    from chatee.client import terminal

    _client_call(terminal.list_agents)


@app.command(rich_help_panel=CLIENT)
def chat(
    agent: Annotated[str, typer.Argument(help="the agent's name or id")],
    session: Annotated[str | None, typer.Option(help="continue this session")] = None,
) -> None:
    """Chat with an agent: replies stream in, with its steps and tool calls; answer its
    questions inline; Ctrl-C cancels a reply, Ctrl-D or /quit leaves."""
    from chatee.client import terminal

    _client_call(lambda: terminal.chat(agent, session))


@devtools.command("llm")
def devtools_llm(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="0 picks a free port")] = 0,
    api_key: Annotated[str | None, typer.Option(help="require 'Authorization: Bearer KEY'")] = None,
    model: Annotated[str, typer.Option(help="the model id /v1/models lists")] = "scripted-llm",
    log_level: Annotated[str, typer.Option()] = "warning",
) -> None:
    """A scripted OpenAI-compatible LLM server; prints LISTENING <url> once it is up.

    Replies "echo: <last user message>" unless scripted over HTTP (POST /_script).
    """
    from chatee.devtools.llm_server import serve

    serve(host, port, api_key=api_key, model=model, log_level=log_level)


@devtools.command("mcp")
def devtools_mcp(
    transport: Annotated[Literal["stdio", "sse", "streamable-http"], typer.Option()] = "stdio",
    host: Annotated[str, typer.Option(help="HTTP transports only")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP transports only")] = 8000,
    token: Annotated[
        str | None, typer.Option(help="HTTP transports: require this bearer token")
    ] = None,
) -> None:
    """A demo MCP server with tools add, echo, fail, slow, structured, image and grow."""
    from chatee.devtools.mcp_demo import serve

    serve(transport, host, port, token)


if __name__ == "__main__":
    app()
