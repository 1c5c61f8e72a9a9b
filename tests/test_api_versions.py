"""ApiVersions, including the KIP-511 answer to a version the broker does not know."""

from __future__ import annotations

import struct

from kio.schema.api_versions.v0.response import ApiVersionsResponse as V0Response
from kio.serial import entity_reader

from protocol.errors import ErrorCode
from tests.wire import WireClient


def test_unknown_api_versions_version_gets_v0_answer_with_ranges(shared_broker) -> None:
    with WireClient(shared_broker.bootstrap) as c:
        # ApiVersions v99: a header the broker can read, a body it cannot
        c.send_raw(struct.pack(">ihhih", 18, 18, 99, 77, 4) + b"test" + b"\x00\x00\x00\x00")
        frame = c.recv_frame()
        (correlation,) = struct.unpack_from(">i", frame, 0)
        body, _ = entity_reader(V0Response)(frame, 4)
        assert correlation == 77
        assert body.error_code == ErrorCode.unsupported_version
        ranges = {k.api_key: (k.min_version, k.max_version) for k in body.api_keys}
        assert ranges[18] == (0, 4) and ranges[0][0] == 0 and ranges[1] == (4, 18)
        # the connection is still usable: the client retries with a version we speak
        v3 = c.call(18, 3, {"client_software_name": "t", "client_software_version": "1"})
        assert v3.error_code == ErrorCode.none
        assert {k.api_key for k in v3.api_keys} == set(ranges)


def test_unsupported_api_closes_the_connection(shared_broker) -> None:
    with WireClient(shared_broker.bootstrap) as c:
        # FindCoordinator is not implemented yet: Kafka closes on an unknown request too
        c.send_raw(struct.pack(">ihhih", 17, 10, 1, 5, 4) + b"test" + b"\x00\x01g")
        try:
            data = c.sock.recv(1)
        except ConnectionResetError:
            data = b""
        assert data == b""
