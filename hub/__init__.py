"""hub: a Pusher Channels protocol v7 compatible broadcast server that scales out over Redis pub/sub."""

__version__ = "0.1.0"
