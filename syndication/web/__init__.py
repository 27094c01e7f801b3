"""The web side of the service: one FastAPI app (``app.create_app``) made of routers, one module per area."""
