"""FastAPI gateway: REST, SSE and (later) WebSocket in front of the Temporal actors."""
