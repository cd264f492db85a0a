"""The routerd wire contract: message types, error codes and their encoding.

This module is the single source of truth for what crosses the socket; ``docs/protocol.md``
describes the same contract for implementers in other languages.

Invariants:

* Every frame is a 4-byte big-endian length followed by one msgpack map (see ``framing``).
* Every message map carries a ``type`` tag: ``request`` and ``cancel`` flow from client to
  daemon; ``result``, ``error`` and ``event`` flow from daemon to client.
* Request ids are chosen by the client, are integers in ``[0, 2**53)`` and are unique among
  the requests in flight on one connection.
* Every request id gets exactly one *final* frame: a ``result``, an ``error``, or an
  ``event`` whose ``event`` field is ``"end"``.
* Wire types ignore unknown fields, so newer peers can add fields without breaking older ones.
* Integers on the wire stay below ``2**53`` so that JSON-minded clients lose nothing.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec

__all__ = [
    "PROTOCOL_VERSION",
    "MAX_ID",
    "DEFAULT_MAX_FRAME_SIZE",
    "ErrorCode",
    "ERROR_CODES",
    "Request",
    "Cancel",
    "Result",
    "Error",
    "Event",
    "ClientMessage",
    "DaemonMessage",
    "Envelope",
    "RequestId",
    "END_EVENT",
    "ClientInfo",
    "AgentInfo",
    "HelloParams",
    "HelloResult",
    "PingResult",
    "StatusResult",
    "ReloadResult",
    "SERVICE_STATES",
    "ServiceInfo",
    "ModelInfo",
    "ServicesListResult",
    "ModelsListParams",
    "ModelsListResult",
    "SubscribeParams",
    "ServiceChange",
    "ServiceRemoved",
    "ModelsChange",
    "EventsSnapshot",
    "AuditTailParams",
    "AuditLine",
    "AuditVerifyParams",
    "AuditMatch",
    "AuditVerifyResult",
    "ChainProblemInfo",
    "AuditChainResult",
    "VerifyParams",
    "CHECKSUM_STATES",
    "ChecksumInfo",
    "VerifyResult",
    "DOCTOR_STATES",
    "DoctorCheck",
    "DoctorResult",
    "EmptyParams",
    "encode",
    "decode_daemon_message",
    "decode_params",
    "ParamsError",
]

#: Protocol version spoken by this library, as ``(major, minor)``. A peer with another major
#: version is refused at ``hello``; minor versions only add optional fields and methods.
PROTOCOL_VERSION: Final[tuple[int, int]] = (1, 0)

#: Largest integer id (exclusive): 2**53, the largest integer a JSON double holds exactly.
MAX_ID: Final[int] = 2**53

#: Default largest frame body in bytes (16 MiB). The daemon's limit is configurable.
DEFAULT_MAX_FRAME_SIZE: Final[int] = 16 * 1024 * 1024

#: The ``event`` name that ends a stream. It is a final frame.
END_EVENT: Final[str] = "end"

RequestId = Annotated[int, msgspec.Meta(ge=0, lt=MAX_ID)]


class ErrorCode:
    """Stable error codes carried in ``error`` frames. Clients match on these strings."""

    BAD_FRAME: Final = "bad_frame"  # bytes that are not a frame or not msgpack
    FRAME_TOO_LARGE: Final = "frame_too_large"  # length prefix over the limit; connection closes
    BAD_REQUEST: Final = "bad_request"  # a frame that is not a valid message, bad params, dup id
    UNKNOWN_METHOD: Final = "unknown_method"
    UNSUPPORTED_VERSION: Final = "unsupported_version"  # hello with another major version
    NOT_FOUND: Final = "not_found"
    UNAVAILABLE: Final = "unavailable"  # nothing can serve this now (shutting down, no backend)
    TIMEOUT: Final = "timeout"
    BUSY: Final = "busy"  # too many connections or requests in flight
    CANCELLED: Final = "cancelled"  # the client cancelled the request
    SLOW_CONSUMER: Final = "slow_consumer"  # the client stopped reading a stream
    FORBIDDEN: Final = "forbidden"  # the peer may not use this method or object
    BAD_CONFIG: Final = "bad_config"  # a reload found the new configuration invalid
    INTERNAL: Final = "internal"  # a bug in routerd; the message says no more than that


#: Every error code this protocol version defines. Unknown codes from a newer daemon must be
#: treated by clients like ``internal``.
ERROR_CODES: Final[frozenset[str]] = frozenset(
    v for k, v in vars(ErrorCode).items() if k.isupper() and isinstance(v, str)
)


# --- Envelope messages -------------------------------------------------------------------------


class Request(msgspec.Struct, tag="request", tag_field="type", omit_defaults=True):
    """Client -> daemon: call ``method`` with ``params`` (a map; an empty array counts as ``{}``)."""

    id: RequestId
    method: str
    params: Any = msgspec.field(default_factory=dict)


class Cancel(msgspec.Struct, tag="cancel", tag_field="type"):
    """Client -> daemon: cancel request ``id``. Its final frame is an ``error`` ``cancelled``
    (or whatever final frame was already on its way). Unknown ids are ignored."""

    id: RequestId


class Result(msgspec.Struct, tag="result", tag_field="type"):
    """Daemon -> client: the final, successful answer to request ``id``."""

    id: RequestId
    result: Any = None


class Error(msgspec.Struct, tag="error", tag_field="type", omit_defaults=True):
    """Daemon -> client: request ``id`` failed (final). ``id`` is ``None`` when the failure
    belongs to the connection rather than a request (a bad frame, say)."""

    id: RequestId | None
    code: str
    message: str
    data: dict[str, Any] | None = None


class Event(msgspec.Struct, tag="event", tag_field="type", omit_defaults=True):
    """Daemon -> client: one event of a streaming reply to request ``id``. The event named
    ``"end"`` is final; any other is not."""

    id: RequestId
    event: str
    data: Any = None


ClientMessage = Request | Cancel
DaemonMessage = Result | Error | Event


class Envelope(msgspec.Struct):
    """What the daemon decodes first from a client frame: just enough to answer with the id.

    ``params`` stays raw msgpack until the method is known.
    """

    type: str
    id: Any = None
    method: Any = None
    params: msgspec.Raw = msgspec.Raw(b"\x80")


# --- Method params and results -----------------------------------------------------------------


class EmptyParams(msgspec.Struct):
    """Params of methods that take none. Unknown fields are ignored."""


class ClientInfo(msgspec.Struct, omit_defaults=True):
    name: str = "unknown"
    version: str = ""


class AgentInfo(msgspec.Struct, omit_defaults=True):
    """The coding agent the client runs under, detected on the client side."""

    name: str = "unknown"
    type: str = "unknown"
    version: str | None = None


class HelloParams(msgspec.Struct):
    # Not omit_defaults: the version must always go on the wire, or a future daemon whose
    # default is another version would take an old client for one of its own.
    protocol: tuple[int, int] = PROTOCOL_VERSION
    client: ClientInfo = msgspec.field(default_factory=ClientInfo)
    agent: AgentInfo = msgspec.field(default_factory=AgentInfo)


class HelloResult(msgspec.Struct):
    daemon: str
    version: str
    protocol: tuple[int, int]
    instance_id: str
    capabilities: list[str]
    max_frame_size: int


class PingResult(msgspec.Struct):
    pass


class StatusResult(msgspec.Struct, omit_defaults=True):
    version: str
    pid: int
    started_at: float
    uptime_s: float
    instance_id: str
    socket: str
    config_path: str | None
    config_generation: int
    last_reload: dict[str, Any] | None
    connections: dict[str, int]
    requests: dict[str, int]
    errors: dict[str, int]
    methods: dict[str, int]
    components: dict[str, Any] = msgspec.field(default_factory=dict)


class ReloadResult(msgspec.Struct):
    generation: int
    config_path: str | None
    changed: bool


# --- Services and models: services.list, models.list, events.subscribe ------------------------

#: States a model server can be in (``ServiceInfo.state``). ``blocked``: the egress policy
#: refuses the address, so it is not probed until the configuration is reloaded.
SERVICE_STATES: Final[tuple[str, ...]] = (
    "unknown", "online", "loading", "busy", "degraded", "offline", "unauthorized", "foreign",
    "blocked",
)  # fmt: skip


class ServiceInfo(msgspec.Struct, omit_defaults=True):
    """One probed model server address, as the daemon sees it now.

    ``kind`` is what answered (``None`` until identified); ``candidates`` the kinds configured
    for the address (``["custom"]`` for a custom endpoint). Times are epoch seconds.
    """

    name: str
    endpoint: str
    state: str
    kind: str | None = None
    candidates: list[str] = []
    reason: str = ""
    since: float | None = None
    latency_ms: float | None = None
    version: str | None = None
    models: int = 0
    loaded_models: list[str] = []
    busy_slots: int | None = None
    total_slots: int | None = None
    last_error: str | None = None
    last_ok: float | None = None
    next_probe_at: float | None = None
    priority: int = 0
    group: str | None = None


class ModelInfo(msgspec.Struct, omit_defaults=True):
    """One model a service offers. ``None`` means the server did not say.

    ``context_source`` says where ``context_length`` came from: ``server``, ``name`` (read in
    the model's name) or ``default``. ``available``: its service takes requests now.
    """

    id: str
    service: str
    kind: str | None = None
    available: bool = False
    context_length: int | None = None
    context_source: str | None = None
    max_context_length: int | None = None
    loaded: bool | None = None
    capabilities: list[str] = []
    family: str | None = None
    parameter_size: str | None = None
    quantization: str | None = None
    size_bytes: int | None = None
    size_vram: int | None = None
    expires_at: float | None = None
    group: str | None = None


class ServicesListResult(msgspec.Struct):
    services: list[ServiceInfo]
    summary: str = ""


class ModelsListParams(msgspec.Struct, omit_defaults=True):
    service: str | None = None  # only this service's models
    available: bool = False  # only models whose service takes requests now


class ModelsListResult(msgspec.Struct):
    models: list[ModelInfo]


class SubscribeParams(msgspec.Struct, omit_defaults=True):
    snapshot: bool = True  # first send one ``snapshot`` event with every service and model


class ServiceChange(msgspec.Struct, omit_defaults=True):
    """Data of the ``service`` event: a service changed state or identity, or appeared
    (``previous`` is ``None``)."""

    service: ServiceInfo
    previous: str | None = None


class ServiceRemoved(msgspec.Struct):
    """Data of the ``service.removed`` event (a reload removed the address)."""

    name: str


class ModelsChange(msgspec.Struct, omit_defaults=True):
    """Data of the ``models`` event: ids added, removed or changed on one service, and the
    service's whole list now."""

    service: str
    added: list[str] = []
    removed: list[str] = []
    changed: list[str] = []
    models: list[ModelInfo] = []


class EventsSnapshot(msgspec.Struct):
    """Data of the ``snapshot`` event."""

    services: list[ServiceInfo]
    models: list[ModelInfo]


# --- Security: audit.tail, audit.verify, audit.verify_chain, verify, doctor -------------------


class AuditTailParams(msgspec.Struct, omit_defaults=True):
    """``audit.tail``: the last ``lines`` lines, then (``follow``) each new one as written."""

    lines: int = 10
    follow: bool = False


class AuditLine(msgspec.Struct):
    """Data of an ``audit.tail`` ``line`` event: one audit log line as written (JSON text)."""

    line: str


class AuditVerifyParams(msgspec.Struct):
    text: str  # is this exact text (a query or response) in the log, by its keyed hash?


class AuditMatch(msgspec.Struct, omit_defaults=True):
    file: str
    line: int
    seq: int
    timestamp: str
    event_type: str
    field: str  # "query" or "response"
    session_id: str | None = None
    model: str | None = None
    service: str | None = None
    uid: int | None = None
    agent: str | None = None


class AuditVerifyResult(msgspec.Struct):
    hash: str  # the keyed hash of the text, as the log would hold it
    matches: list[AuditMatch]


class ChainProblemInfo(msgspec.Struct):
    file: str
    line: int
    seq: int | None
    problem: str


class AuditChainResult(msgspec.Struct):
    """``audit.verify_chain``: ``ok`` if every line verifies and none is missing."""

    ok: bool
    lines: int
    first_seq: int | None
    last_seq: int | None
    anchored: bool  # the chain starts at seq 1 (no file removed by retention)
    files: list[str]
    problems: list[ChainProblemInfo]


class VerifyParams(msgspec.Struct, omit_defaults=True):
    models: list[str] = []  # only the files of these models; [] means every known file


#: ``ChecksumInfo.status`` values.
CHECKSUM_STATES: Final[tuple[str, ...]] = ("ok", "mismatch", "missing", "error")


class ChecksumInfo(msgspec.Struct, omit_defaults=True):
    path: str
    status: str  # one of CHECKSUM_STATES
    source: str  # "ollama" (content-addressed blob) or "config" (security.model_checksums)
    expected: str = ""
    actual: str | None = None
    models: list[str] = []
    detail: str = ""


class VerifyResult(msgspec.Struct):
    ok: bool
    files: list[ChecksumInfo]
    blocked_models: list[str]  # not routed to while security.verify_checksums is on


#: ``DoctorCheck.status`` values: ``unknown`` means "cannot tell from here".
DOCTOR_STATES: Final[tuple[str, ...]] = ("pass", "fail", "unknown")


class DoctorCheck(msgspec.Struct, omit_defaults=True):
    name: str
    status: str  # one of DOCTOR_STATES
    detail: str = ""
    fix: str = ""  # what to do when it is not "pass"


class DoctorResult(msgspec.Struct):
    checks: list[DoctorCheck]


# --- Encoding helpers --------------------------------------------------------------------------

_encoder = msgspec.msgpack.Encoder()
_daemon_decoder: msgspec.msgpack.Decoder[DaemonMessage] = msgspec.msgpack.Decoder(DaemonMessage)
_any_decoder = msgspec.msgpack.Decoder()


def encode(msg: Any) -> bytes:
    """Encode a message (or any msgpack-able value) to msgpack bytes, without the prefix."""
    return _encoder.encode(msg)


def decode_daemon_message(body: bytes) -> DaemonMessage:
    """Decode a daemon -> client frame body. Raises ``msgspec.DecodeError`` on bad input."""
    return _daemon_decoder.decode(body)


class ParamsError(ValueError):
    """Params that do not fit the method's params type. ``str(err)`` names the field."""


_EMPTY_ARRAY = b"\x90"
_EMPTY_MAP = b"\x80"


def decode_params(raw: bytes | msgspec.Raw, typ: type[Any]) -> Any:
    """Decode raw msgpack ``params`` into ``typ``.

    An empty array is accepted wherever a map is expected (Neovim's msgpack encodes an empty
    table as an array), at the top level and in nested fields. Raises ``ParamsError``.
    """
    body = bytes(raw)
    if body == _EMPTY_ARRAY:
        body = _EMPTY_MAP
    try:
        return _decode_params(body, typ)
    except RecursionError:
        # msgspec raises RecursionError (not DecodeError) for very deeply nested input.
        raise ParamsError("params are nested too deeply") from None


def _decode_params(body: bytes, typ: type[Any]) -> Any:
    try:
        return msgspec.msgpack.decode(body, type=typ)
    except msgspec.ValidationError as first:
        # Slow path: retry with empty arrays turned into maps where the type wants a map.
        try:
            value = _any_decoder.decode(body)
        except msgspec.DecodeError as exc:  # pragma: no cover - the fast path decoded it
            raise ParamsError(str(exc)) from None
        fixed = _maps_for_empty_arrays(value, msgspec.inspect.type_info(typ))
        if fixed is value:
            raise ParamsError(str(first)) from None
        try:
            return msgspec.convert(fixed, typ, strict=True)
        except msgspec.ValidationError as exc:
            raise ParamsError(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ParamsError(f"params are not valid msgpack: {exc}") from None


def _maps_for_empty_arrays(value: Any, info: msgspec.inspect.Type) -> Any:
    """Return ``value`` with ``[]`` replaced by ``{}`` where ``info`` expects a map.

    Returns ``value`` itself (same object) when nothing changed.
    """
    mi = msgspec.inspect
    if isinstance(info, mi.UnionType):
        wants_map = any(isinstance(t, (mi.DictType, mi.StructType)) for t in info.types)
        if value == [] and wants_map and not any(
            isinstance(t, (mi.ListType, mi.TupleType, mi.VarTupleType, mi.SetType)) for t in info.types
        ):
            return {}
        for t in info.types:
            if isinstance(t, (mi.DictType, mi.StructType, mi.ListType)):
                new = _maps_for_empty_arrays(value, t)
                if new is not value:
                    return new
        return value
    if isinstance(info, (mi.DictType, mi.StructType)) and value == [] and isinstance(value, list):
        return {}
    if isinstance(info, mi.StructType) and isinstance(value, dict):
        changed = False
        out = dict(value)
        for f in info.fields:
            key = f.encode_name
            if key in out:
                new = _maps_for_empty_arrays(out[key], f.type)
                if new is not out[key]:
                    out[key] = new
                    changed = True
        return out if changed else value
    if isinstance(info, mi.DictType) and isinstance(value, dict):
        changed = False
        out = {}
        for k, v in value.items():
            new = _maps_for_empty_arrays(v, info.value_type)
            changed = changed or new is not v
            out[k] = new
        return out if changed else value
    if isinstance(info, mi.ListType) and isinstance(value, list):
        items = [_maps_for_empty_arrays(v, info.item_type) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value
