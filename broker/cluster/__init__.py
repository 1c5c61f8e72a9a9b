"""Cluster mode: broker membership and controller election, kept in etcd."""
