"""Transactions (KIP-98, KIP-447): the coordinator, its state log and the markers."""
