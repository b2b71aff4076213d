"""Temporal client and the search attributes Chatee's workflows are indexed by."""

from __future__ import annotations

from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from chatee.config import ConfigError, Settings
from chatee.logging import register_secret
from chatee.tracing import temporal_interceptors
from workflows.names import (
    AGENT_ID_ATTRIBUTE,
    SEARCH_ATTRIBUTES,
    SESSION_ID_ATTRIBUTE,
    USER_ID_ATTRIBUTE,
)

AGENT_ID = SearchAttributeKey.for_keyword(AGENT_ID_ATTRIBUTE)
USER_ID = SearchAttributeKey.for_keyword(USER_ID_ATTRIBUTE)
SESSION_ID = SearchAttributeKey.for_keyword(SESSION_ID_ATTRIBUTE)


def tls_config(settings: Settings) -> TLSConfig | bool:
    """TLS for a cluster or Temporal Cloud from `temporal.tls*` (PEM files read now, so a bad
    path fails at start-up, naming the setting). False: plaintext (the dev server)."""
    knobs = settings.temporal
    paths = {
        "tls_server_ca_cert_path": knobs.tls_server_ca_cert_path,
        "tls_client_cert_path": knobs.tls_client_cert_path,
        "tls_client_key_path": knobs.tls_client_key_path,
    }
    if (knobs.tls_client_cert_path is None) != (knobs.tls_client_key_path is None):
        raise ConfigError(
            "temporal.tls_client_cert_path and temporal.tls_client_key_path go together (mTLS)"
        )
    wanted = knobs.tls or knobs.api_key is not None or knobs.tls_server_name is not None
    if not wanted and not any(paths.values()):
        return False
    pem: dict[str, bytes | None] = {}
    for name, path in paths.items():
        if path is None:
            pem[name] = None
            continue
        try:
            pem[name] = Path(path).read_bytes()
        except OSError as exc:
            env = "CHATEE_TEMPORAL__" + name.upper()
            raise ConfigError(
                f"temporal.{name} ({env}): cannot read {path}: {exc.strerror}"
            ) from None
    if not any(pem.values()) and knobs.tls_server_name is None:
        return True  # system roots, no client certificate (Temporal Cloud with an API key)
    return TLSConfig(
        server_root_ca_cert=pem["tls_server_ca_cert_path"],
        client_cert=pem["tls_client_cert_path"],
        client_private_key=pem["tls_client_key_path"],
        domain=knobs.tls_server_name,
    )


async def connect(settings: Settings, lazy: bool = False, runtime: Runtime | None = None) -> Client:
    """The Temporal client: TLS and API key from config, tracing interceptor when tracing is
    on (workers built from this client inherit it)."""
    api_key = settings.temporal.api_key.get_secret_value() if settings.temporal.api_key else None
    register_secret(api_key)
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        lazy=lazy,
        tls=tls_config(settings),
        api_key=api_key,
        interceptors=temporal_interceptors(settings),
        runtime=runtime,
    )


async def ensure_search_attributes(client: Client) -> None:
    """Register the Keyword search attributes if the cluster does not have them yet."""
    namespace = client.namespace
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = [name for name in SEARCH_ATTRIBUTES if name not in listed.custom_attributes]
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace,
                search_attributes={
                    name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in missing
                },
            )
        )


def session_search_attributes(
    session_id: int, agent_id: int, user_id: int
) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(AGENT_ID, str(agent_id)),
            SearchAttributePair(USER_ID, str(user_id)),
            SearchAttributePair(SESSION_ID, str(session_id)),
        ]
    )
