"""Serving many tuned prompts on one frozen model: registry (storage, tenants), engine (batching, prefix cache),
HTTP app, client, and export/import."""
