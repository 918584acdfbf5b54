"""The public HTTP API (FastAPI): sign-in, serve, servers, models, ext-authz."""
