"""Cluster-wide state (occupancy, presence, users, liveness): memory for one process, Redis for a cluster."""
