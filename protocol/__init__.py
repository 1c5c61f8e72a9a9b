"""Sans-IO Kafka protocol: framing, request/response codecs, batch headers. No sockets here."""
