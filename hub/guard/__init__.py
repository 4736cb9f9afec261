"""Limits that keep an abusive client from hurting the others: connection floods, slowloris, bad signatures."""
