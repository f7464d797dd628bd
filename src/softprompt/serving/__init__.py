"""Serving a frozen model for remote black-box tuning: `server` (FastAPI app), `client` (RemoteEvaluator), `wire`."""
