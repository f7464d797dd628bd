"""Serving many tuned prompts on one frozen model: the prompt registry, tenants, export/import, and the server."""
