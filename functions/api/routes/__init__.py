"""The API's routers, one per resource; ``app.create_app`` puts them together."""
