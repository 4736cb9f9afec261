"""The HTTP ingest node: the Pusher HTTP API backends call to publish and to query channels."""
