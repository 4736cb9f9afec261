"""Webhooks: Pusher's event notifications to the app's backend, queued durably and retried for 5 minutes."""
