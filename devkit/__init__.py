"""Developer kit shared by tests/ and benchmarks/: broker and helper-server processes (moto,
etcd), free ports and polling, and the Kafka jars (broker, CLI tools, Java client) fetched once
from Maven Central. Nothing in broker/ imports it."""
