"""Tools for developing against Chatee, shipped with it: a scripted OpenAI-compatible LLM
server, a demo MCP server, and launchers for real `chatee` processes.

The suite and the benchmarks use them, and so can anyone trying Chatee offline
(`chatee devtools llm`, `chatee devtools mcp`). Nothing in the product imports them.
"""
