"""Temporal client and the search attributes Chatee's workflows are indexed by."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from chatee.config import Settings
from workflows.types import SEARCH_ATTRIBUTES

AGENT_ID = SearchAttributeKey.for_keyword("ChateeAgentId")
USER_ID = SearchAttributeKey.for_keyword("ChateeUserId")
SESSION_ID = SearchAttributeKey.for_keyword("ChateeSessionId")


async def connect(settings: Settings, lazy: bool = False) -> Client:
    return await Client.connect(
        settings.temporal_address, namespace=settings.temporal_namespace, lazy=lazy
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
