"""Class-specialist sub-networks: prune a classifier down to the channels a class subset needs."""
