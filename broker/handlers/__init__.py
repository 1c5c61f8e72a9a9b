"""Request handlers by area. Each takes the broker and a decoded request and returns
the response as a dict of fields (see protocol.codec.build), or None for no response."""

from broker.handlers import (
    api_versions,
    fetch,
    list_offsets,
    metadata,
    produce,
    producer_id,
    topics,
)
from protocol.versions import ApiKey

HANDLERS = {
    ApiKey.API_VERSIONS: api_versions.handle,
    ApiKey.METADATA: metadata.handle,
    ApiKey.CREATE_TOPICS: topics.handle_create,
    ApiKey.DELETE_TOPICS: topics.handle_delete,
    ApiKey.PRODUCE: produce.handle,
    ApiKey.FETCH: fetch.handle,
    ApiKey.LIST_OFFSETS: list_offsets.handle,
    ApiKey.INIT_PRODUCER_ID: producer_id.handle,
}
