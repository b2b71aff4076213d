"""Persist and fan-out activities of the `chatee-messages` queue."""

from __future__ import annotations

from temporalio import activity

from activities.deps import Deps
from workflows.types import TurnEvent


class MessageActivities:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @activity.defn(name="PublishTurnEvent")
    async def publish_turn_event(self, event: TurnEvent) -> None:
        """Append a workflow-decided event (e.g. `turn.failed`) exactly once."""
        data = {"turn_id": event.turn_id, **event.data}
        await self.deps.bus.publish(event.session_id, event.event, data, once_key=event.once_key)
