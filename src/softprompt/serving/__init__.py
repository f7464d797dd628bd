"""Serving many tuned prompts on one frozen model: registry (storage), engine (batching), HTTP app and client."""
