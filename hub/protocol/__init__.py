"""Pure Pusher Channels protocol v7: parsing, frame building, names, errors and signatures. No I/O."""
