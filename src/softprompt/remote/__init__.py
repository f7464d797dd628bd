"""A frozen model behind HTTP for remote black-box tuning: `server` (the app), `client` (RemoteEvaluator), `wire`."""
