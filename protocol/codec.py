"""Request decoding and response encoding through kio, by api key and version.

Handlers describe responses as plain dicts holding the union of fields across
versions; `build` turns one into the dataclass of the negotiated version, dropping
fields that version lacks and defaulting the ones it adds. That keeps version
differences in kio's schemas instead of in every handler.
"""

from __future__ import annotations

import datetime
import io
import struct
from dataclasses import MISSING, dataclass, fields
from functools import cache
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer
from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    classify_field,
    get_schema_field_type,
    is_optional,
)

from protocol.errors import ErrorCode, ProtocolError

_REQUEST_PREFIX = struct.Struct(">hhi")
_SIZE = struct.Struct(">i")


class UnsupportedRequest(ProtocolError):
    """An api key or version this broker cannot parse."""


class MalformedRequest(ProtocolError):
    """A request whose bytes do not decode under its declared schema."""


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


@dataclass(frozen=True, slots=True)
class Request:
    header: RequestHeader
    body: Any
    size: int
    peer: str = ""  # "host:port" of the client, for logs and group member descriptions
    session: Any = None  # who sent it (broker.security.session.Session); opaque here


def peek_header(frame: bytes) -> tuple[int, int, int]:
    """api key, version and correlation id: readable for any request, even an unknown one."""
    if len(frame) < _REQUEST_PREFIX.size:
        raise MalformedRequest(f"request of {len(frame)} bytes has no header")
    return _REQUEST_PREFIX.unpack_from(frame, 0)


@cache
def _request_readers(api_key: int, api_version: int):
    try:
        cls = load_request_schema(api_key, api_version)
    except Exception as e:  # UnknownAPIKey, UnknownEntity
        raise UnsupportedRequest(f"api key {api_key} version {api_version}") from e
    return entity_reader(cls.__header_schema__), entity_reader(cls)


def decode_request(frame: bytes, peer: str = "", session: Any = None) -> Request:
    api_key, api_version, correlation_id = peek_header(frame)
    read_header, read_body = _request_readers(api_key, api_version)
    try:
        header, used = read_header(frame, 0)
        body, body_size = read_body(frame, used)
        _check_nulls(body)
    except Exception as e:  # kio raises BufferUnderflow, KeyError, ValueError...
        raise MalformedRequest(
            f"api key {api_key} v{api_version} correlation {correlation_id}: "
            f"{type(e).__name__}: {e}"
        ) from e
    return Request(
        RequestHeader(api_key, api_version, correlation_id, header.client_id),
        body,
        len(frame),
        peer,
        session,
    )


@cache
def _null_plan(cls: type) -> tuple[tuple[str, bool, type | None, bool], ...]:
    """(field, nullable, nested entity class, is array) for each field of `cls`."""
    plan = []
    for f in fields(cls):
        fc = classify_field(f)
        nested = fc.type_ if isinstance(fc, (EntityField, EntityTupleField)) else None
        plan.append((f.name, is_optional(f), nested, fc.is_array))
    return tuple(plan)


def _check_nulls(entity: Any) -> None:
    """kio reads a -1 length as None even where the schema forbids null; Kafka refuses it."""
    for name, nullable, nested, is_array in _null_plan(type(entity)):
        value = getattr(entity, name)
        if value is None:
            if not nullable:
                raise ValueError(f"null {name} in {type(entity).__name__}")
        elif nested is not None:
            for item in value if is_array else (value,):
                _check_nulls(item)


@cache
def response_class(api_key: int, api_version: int) -> type:
    return load_response_schema(api_key, api_version)


@cache
def _writers(cls: type):
    return entity_writer(cls.__header_schema__), entity_writer(cls)


def encode_response(correlation_id: int, response: Any) -> memoryview:
    """A complete frame: size prefix, response header of the right version, body.

    A view of the encoding buffer rather than a copy: Fetch responses run to megabytes."""
    write_header, write_body = _writers(type(response))
    buf = io.BytesIO()
    buf.write(b"\0\0\0\0")
    write_header(buf, type(response).__header_schema__(correlation_id=correlation_id))
    write_body(buf, response)
    out = buf.getbuffer()
    _SIZE.pack_into(out, 0, len(out) - 4)
    return out


# --- building versioned responses from plain dicts -------------------------------------

_PLAIN, _ENTITY, _ENTITY_TUPLE, _TIMEDELTA, _DATETIME, _ERROR = range(6)
_EPOCH = datetime.datetime.fromtimestamp(0, datetime.UTC)


@cache
def _plan(cls: type) -> tuple[tuple[str, int, type | None, bool], ...]:
    plan = []
    for f in fields(cls):
        has_default = f.default is not MISSING or f.default_factory is not MISSING
        kind, nested = _PLAIN, None
        fc = classify_field(f)
        if isinstance(fc, EntityTupleField):
            kind, nested = _ENTITY_TUPLE, fc.type_
        elif isinstance(fc, EntityField):
            kind, nested = _ENTITY, fc.type_
        else:
            kafka_type = get_schema_field_type(f)
            if kafka_type.startswith("timedelta"):
                kind = _TIMEDELTA
            elif kafka_type.startswith("datetime"):
                kind = _DATETIME
            elif kafka_type == "error_code":
                kind = _ERROR
        plan.append((f.name, kind, nested, has_default))
    return tuple(plan)


def build(cls: type, data: dict[str, Any]) -> Any:
    """Instantiate kio dataclass `cls` from `data`; see the module docstring."""
    kwargs = {}
    for name, kind, nested, has_default in _plan(cls):
        if name not in data:
            if not has_default:
                raise KeyError(f"{cls.__module__}.{cls.__qualname__} needs field {name!r}")
            continue
        value = data[name]
        if kind == _ENTITY_TUPLE:
            if value is not None:
                value = tuple(v if isinstance(v, nested) else build(nested, v) for v in value)
        elif kind == _ENTITY:
            if value is not None and not isinstance(value, nested):
                value = build(nested, value)
        elif kind == _TIMEDELTA:
            if isinstance(value, int):
                value = datetime.timedelta(milliseconds=value)
        elif kind == _ERROR:
            if not isinstance(value, ErrorCode):
                value = ErrorCode(value)
        elif kind == _DATETIME and isinstance(value, int):
            # Not None for -1: kio cannot write None into a non-nullable datetime field (e.g.
            # DescribeTransactions' transaction_start_time), and epoch - 1 ms writes -1 anyway.
            value = _EPOCH + datetime.timedelta(milliseconds=value)
        kwargs[name] = value
    return cls(**kwargs)


def build_response(api_key: int, api_version: int, data: dict[str, Any]) -> Any:
    return build(response_class(api_key, api_version), data)


# --- the client side, for the broker's own calls to other brokers ----------------------


def encode_request(
    api_key: int, api_version: int, correlation_id: int, client_id: str, body: dict[str, Any]
) -> bytes:
    """A complete request frame (size prefix, header, body) from a plain dict."""
    cls = load_request_schema(api_key, api_version)
    write_header, write_body = _writers(cls)
    buf = io.BytesIO()
    buf.write(b"\0\0\0\0")
    write_header(
        buf,
        cls.__header_schema__(
            request_api_key=api_key,
            request_api_version=api_version,
            correlation_id=correlation_id,
            client_id=client_id,
        ),
    )
    write_body(buf, build(cls, body))
    out = buf.getbuffer()
    _SIZE.pack_into(out, 0, len(out) - 4)
    return bytes(out)


@cache
def _response_readers(api_key: int, api_version: int):
    cls = load_response_schema(api_key, api_version)
    return entity_reader(cls.__header_schema__), entity_reader(cls)


def decode_response(api_key: int, api_version: int, frame: bytes) -> tuple[int, Any]:
    """(correlation id, response entity) of a response frame without its size prefix."""
    read_header, read_body = _response_readers(api_key, api_version)
    header, used = read_header(frame, 0)
    body, _ = read_body(frame, used)
    return header.correlation_id, body
