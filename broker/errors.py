"""Exceptions a handler raises to steer its connection rather than to answer."""


class CloseConnection(Exception):
    """Close the client's connection without a response (already logged by the raiser).

    Kafka does this when an acks=0 produce fails: with no response coming, a closed
    connection is the only way the client learns something went wrong.
    """
