"""The classic consumer-group protocol: membership, rebalances, committed offsets."""
