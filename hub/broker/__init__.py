"""Brokers carry published messages between nodes: memory for one process, Redis for a cluster."""
