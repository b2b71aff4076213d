"""Chatee: a chat backend where people talk to each other and to AI agents, built on Temporal."""
