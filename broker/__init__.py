"""The Strata broker: asyncio server, handlers, partition state, configuration."""
