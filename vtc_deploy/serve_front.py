"""The front of ``vtc-deploy serve``: the public HTTP and gRPC listeners, in this process, in front of a Triton
Inference Server that listens on loopback ports of its own (torch-free).

Owns: ``Front`` (both listeners, readiness, draining), the process helpers the server, its tests and its benchmark share
(``free_loopback_ports``, ``descendants``), ``RequestCheck`` and the request checks done before Triton
sees a byte: the size limit (read from ``Content-Length`` and the gRPC message-length prefix, so an oversized
upload is refused before its payload is buffered), empty tensors (a dimension of 0) and the request id, which is
passed on to the models as the request parameter ``vtc_request_id`` so that their errors can name it.
Imports: grpcio (the ``serve`` extra), the standard library. Never torch, never Triton itself.

Triton (the version PyTriton 0.7 bundles) has no request-size option of its own: it reads a whole request into
memory, and its Python backend copies it into shared memory, before any model code can look at its size.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vtc_deploy.errors import ServeError

log = logging.getLogger("vtc_deploy.serve")
REQUEST_ID_PARAMETER = "vtc_request_id"
_GRPC_SERVICE = "/inference.GRPCInferenceService/"
_HEAD_LIMIT = 64 * 1024  # bytes of request line + headers
_CHUNK = 1 << 20


def check_port_free(host: str, port: int, what: str) -> None:
    """Raise ``ServeError`` naming ``port`` when something already listens on it (bind test, as a server would)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ServeError(f"{what} port {port} on {host} is not available: {exc.strerror or exc}") from None


def free_loopback_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 right now (for Triton's internal listeners)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc), children first."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        out += children
        todo += children
    return out


# --- protobuf wire format: just enough of inference.ModelInferRequest to read its id and input shapes -----------


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, varint value or length-delimited bytes) for each top-level field of a message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, value
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("truncated field")
            yield number, buf[pos : pos + size]
            pos += size
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _grpc_request_summary(message: bytes) -> tuple[str, str, list[tuple[str, list[int]]]]:
    """(model name, request id, [(input name, shape)]) of a serialized ModelInferRequest."""
    model = request_id = ""
    inputs: list[tuple[str, list[int]]] = []
    for number, value in _fields(memoryview(message)):
        if number == 1 and isinstance(value, memoryview):
            model = bytes(value).decode(errors="replace")
        elif number == 3 and isinstance(value, memoryview):
            request_id = bytes(value).decode(errors="replace")
        elif number == 5 and isinstance(value, memoryview):  # InferInputTensor
            name, shape = "", []
            for n, v in _fields(value):
                if n == 1 and isinstance(v, memoryview):
                    name = bytes(v).decode(errors="replace")
                elif n == 3 and isinstance(v, memoryview):  # packed int64
                    pos = 0
                    while pos < len(v):
                        dim, pos = _varint(v, pos)
                        shape.append(dim - (1 << 64) if dim >= 1 << 63 else dim)
                elif n == 3 and isinstance(v, int):
                    shape.append(v)
            inputs.append((name, shape))
    return model, request_id, inputs


def _grpc_with_request_id(message: bytes, request_id: str) -> bytes:
    """``message`` with ``parameters[vtc_request_id] = request_id`` appended (protobuf merges appended fields)."""
    value = _len_field(3, request_id.encode())  # InferParameter.string_param
    entry = _len_field(1, REQUEST_ID_PARAMETER.encode()) + _len_field(2, value)
    return message + _len_field(4, entry)


@dataclass(frozen=True)
class RequestCheck:
    """The checks every inference request passes before it is forwarded."""

    max_bytes: int

    @staticmethod
    def name(request_id: str) -> str:
        return f"request {request_id!r}" if request_id else "request"

    def inputs(self, request_id: str, inputs: list[tuple[str, list[int]]]) -> str | None:
        """An error for empty or negative shapes, else None."""
        for name, shape in inputs:
            if any(d < 1 for d in shape):
                return f"{self.name(request_id)}: input {name!r} has shape {shape}; every dimension must be at least 1"
        return None

    def size(self, size: int) -> str | None:
        if size > self.max_bytes:
            return (
                f"request of {size / 2**20:.1f} MB is over the {self.max_bytes / 2**20:g} MB limit of this server "
                "(vtc-deploy serve --max-request-mb)"
            )
        return None


class _State:
    """Readiness, draining and the count of requests in flight, shared by both listeners."""

    def __init__(self) -> None:
        self.ready = False
        self.draining = False
        self.expired = False  # the drain deadline passed: requests still in flight are refused
        self.in_flight = 0
        self.cond = threading.Condition()

    def enter(self) -> None:
        with self.cond:
            self.in_flight += 1

    def leave(self) -> None:
        with self.cond:
            self.in_flight -= 1
            self.cond.notify_all()


# --- gRPC ------------------------------------------------------------------------------------------------------


def _identity(data: bytes) -> bytes:
    return data


class _GrpcProxy:
    """A generic gRPC handler that forwards every method of Triton's GRPCInferenceService as raw bytes."""

    def __init__(self, state: _State, check: RequestCheck, upstream: str) -> None:
        import grpc

        self.grpc = grpc
        self.state = state
        self.check = check
        self.channel = grpc.insecure_channel(
            upstream, options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        )

    def close(self) -> None:
        self.channel.close()

    def handler(self, details: Any) -> Any:
        method = details.method
        if not method.startswith(_GRPC_SERVICE):
            return None
        if method.endswith("/ModelStreamInfer"):
            return self.grpc.stream_stream_rpc_method_handler(
                lambda it, ctx: self._stream(method, it, ctx),
                request_deserializer=_identity,
                response_serializer=_identity,
            )
        return self.grpc.unary_unary_rpc_method_handler(
            lambda req, ctx: self._unary(method, req, ctx),
            request_deserializer=_identity,
            response_serializer=_identity,
        )

    @staticmethod
    def _metadata(context: Any) -> list[tuple[str, str | bytes]]:
        skip = ("grpc-", ":")
        return [
            (k, v)
            for k, v in context.invocation_metadata()
            if not k.startswith(skip) and k not in ("user-agent", "content-type", "te")
        ]

    def _unary(self, method: str, request: bytes, context: Any) -> bytes:
        grpc, state = self.grpc, self.state
        name = method[len(_GRPC_SERVICE) :]
        if name == "ServerLive":
            return b"\x08\x01"  # live: this process answers
        if (not state.ready or state.draining) and name in ("ServerReady", "ModelReady"):
            return b""  # ready = false
        if state.draining:
            context.abort(grpc.StatusCode.UNAVAILABLE, "server is stopping: request refused")
        if not state.ready:
            context.abort(grpc.StatusCode.UNAVAILABLE, "server is starting: the models are not loaded yet")
        if name == "ModelInfer":
            try:
                _, request_id, inputs = _grpc_request_summary(request)
            except ValueError as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed ModelInferRequest: {exc}")
            error = self.check.inputs(request_id, inputs)
            if error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, error)
            if request_id:
                request = _grpc_with_request_id(request, request_id)
        call = self.channel.unary_unary(method, request_serializer=_identity, response_deserializer=_identity)
        state.enter()
        try:
            timeout = context.time_remaining()  # a huge number when the client set no deadline
            timeout = timeout if timeout is not None and timeout < 1e6 else None
            future = call.future(request, metadata=self._metadata(context), timeout=timeout)
            done = threading.Event()
            future.add_done_callback(lambda _: done.set())
            while not done.wait(0.2):
                if state.expired or not context.is_active():
                    future.cancel()
                    context.abort(grpc.StatusCode.UNAVAILABLE, "server stopped before the request finished")
            try:
                return future.result()
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details() or str(exc.code()))
                raise  # not reached: abort raises
        finally:
            state.leave()

    def _stream(self, method: str, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        grpc, state = self.grpc, self.state
        if state.draining or not state.ready:
            context.abort(grpc.StatusCode.UNAVAILABLE, "server is not ready: request refused")
        call = self.channel.stream_stream(method, request_serializer=_identity, response_deserializer=_identity)
        state.enter()
        try:
            yield from call(requests, metadata=self._metadata(context))
        except grpc.RpcError as exc:
            context.abort(exc.code(), exc.details() or str(exc.code()))
        finally:
            state.leave()


# --- HTTP ------------------------------------------------------------------------------------------------------


def _parse_headers(lines: list[str]) -> list[tuple[str, str]]:
    headers = []
    for line in lines:
        if line:
            key, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"bad header line {line[:80]!r}")
            headers.append((key.strip(), value.strip()))
    return headers


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    """Method, target, version and headers of a request head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise ValueError(f"bad request line {lines[0][:80]!r}")
    return parts[0], parts[1], parts[2], _parse_headers(lines[1:])


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _http_response(status: int, reason: str, body: bytes, *, close: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n"
    )
    return head.encode() + body


def _http_error(status: int, reason: str, message: str, *, close: bool = False) -> bytes:
    return _http_response(status, reason, json.dumps({"error": message}).encode(), close=close)


class _HttpProxy:
    """HTTP/1.1 in front of Triton's HTTP endpoint: one upstream connection per client connection."""

    def __init__(self, state: _State, check: RequestCheck, upstream_port: int) -> None:
        self.state = state
        self.check = check
        self.upstream_port = upstream_port
        self.idle: set[asyncio.StreamWriter] = set()
        self.busy: set[asyncio.Task[Any]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                self.idle.add(writer)
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                finally:
                    self.idle.discard(writer)
                keep, upstream = await self._request(head, reader, writer, upstream)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            for w in (writer, upstream[1] if upstream else None):
                if w is not None:
                    w.close()

    async def _request(
        self,
        head: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
    ) -> tuple[bool, tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]:
        state = self.state
        try:
            method, target, version, headers = _parse_head(head)
            length = int(_header(headers, "content-length") or 0)
        except ValueError as exc:
            writer.write(_http_error(400, "Bad Request", f"malformed HTTP request: {exc}", close=True))
            await writer.drain()
            return False, upstream
        close = (_header(headers, "connection") or "").lower() == "close" or version == "HTTP/1.0"
        path = target.split("?", 1)[0]
        if _header(headers, "transfer-encoding"):
            writer.write(_http_error(411, "Length Required", "chunked uploads are not accepted", close=True))
            await writer.drain()
            return False, upstream
        error = self.check.size(length)
        if error:  # answer first, then read and drop the body (bounded memory) so the client sees the answer
            writer.write(_http_error(413, "Payload Too Large", error, close=True))
            await writer.drain()
            await self._discard(reader, length)
            return False, upstream
        if path == "/v2/health/live":
            writer.write(_http_response(200, "OK", b"", close=close))
            await writer.drain()
            await self._discard(reader, length)
            return not close, upstream
        if not state.ready or state.draining:
            await self._discard(reader, length)
            if path == "/v2/health/ready" or (path.startswith("/v2/models/") and path.endswith("/ready")):
                writer.write(_http_response(503, "Service Unavailable", b"", close=close or state.draining))
            else:
                message = (
                    "server is stopping: request refused"
                    if state.draining
                    else "server is starting: the models are not loaded yet"
                )
                writer.write(_http_error(503, "Service Unavailable", message, close=close or state.draining))
            await writer.drain()
            return not (close or state.draining), upstream
        body = await reader.readexactly(length) if length else b""
        if method == "POST" and path.endswith("/infer"):
            body, headers, error = self._inspect(body, headers)
            if error:
                writer.write(_http_error(400, "Bad Request", error, close=close))
                await writer.drain()
                return not close, upstream
        state.enter()
        task = asyncio.current_task()
        if task is not None:
            self.busy.add(task)
        try:
            if upstream is None:
                upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port, limit=_HEAD_LIMIT)
            keep_upstream = await self._forward(method, target, headers, body, upstream, writer)
        except asyncio.CancelledError:  # the drain deadline passed
            message = "server stopped before the request finished"
            writer.write(_http_error(503, "Service Unavailable", message, close=True))
            await writer.drain()
            return False, upstream
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
            writer.write(_http_error(502, "Bad Gateway", f"Triton did not answer: {exc}", close=True))
            await writer.drain()
            return False, upstream
        finally:
            if task is not None:
                self.busy.discard(task)
            state.leave()
        if not keep_upstream and upstream is not None:
            upstream[1].close()
            upstream = None
        return not close, upstream

    def _inspect(self, body: bytes, headers: list[tuple[str, str]]) -> tuple[bytes, list[tuple[str, str]], str | None]:
        """Check input shapes and pass the request id on as a parameter (rewriting the JSON header part)."""
        header_len = _header(headers, "inference-header-content-length")
        try:
            n = int(header_len) if header_len is not None else len(body)
            request = json.loads(body[:n])
        except (ValueError, UnicodeDecodeError) as exc:
            return body, headers, f"malformed inference request JSON: {exc}"
        if not isinstance(request, dict):
            return body, headers, "malformed inference request JSON: not an object"
        request_id = str(request.get("id", "") or "")
        inputs = [
            (str(i.get("name", "")), [int(d) for d in i.get("shape", [])])
            for i in request.get("inputs", [])
            if isinstance(i, dict) and isinstance(i.get("shape", []), list)
        ]
        error = self.check.inputs(request_id, inputs)
        if error or not request_id:
            return body, headers, error
        params = request.setdefault("parameters", {})
        if isinstance(params, dict):
            params[REQUEST_ID_PARAMETER] = request_id
        new_header = json.dumps(request).encode()
        body = new_header + body[n:]
        headers = [(k, v) for k, v in headers if k.lower() not in ("content-length", "inference-header-content-length")]
        headers.append(("Content-Length", str(len(body))))
        if header_len is not None:
            headers.append(("Inference-Header-Content-Length", str(len(new_header))))
        return body, headers, None

    @staticmethod
    async def _discard(reader: asyncio.StreamReader, length: int) -> None:
        while length > 0:
            chunk = await reader.read(min(length, _CHUNK))
            if not chunk:
                return
            length -= len(chunk)

    @staticmethod
    async def _forward(
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Send one request upstream and relay its response; whether the upstream connection can be reused."""
        up_reader, up_writer = upstream
        lines = [f"{method} {target} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in headers if k.lower() not in ("connection", "keep-alive")]
        up_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await up_writer.drain()
        head = await up_reader.readuntil(b"\r\n\r\n")
        resp_headers = _parse_headers(head.decode("latin-1").split("\r\n")[1:])
        keep = (_header(resp_headers, "connection") or "").lower() != "close"
        writer.write(head)
        if (_header(resp_headers, "transfer-encoding") or "").lower() == "chunked":
            while True:
                size_line = await up_reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                data = await up_reader.readexactly(size + 2)
                writer.write(size_line + data)
                if size == 0:
                    break
        else:
            remaining = int(_header(resp_headers, "content-length") or 0)
            while remaining > 0:
                chunk = await up_reader.read(min(remaining, _CHUNK))
                if not chunk:
                    raise ConnectionError("Triton closed the connection mid-response")
                writer.write(chunk)
                remaining -= len(chunk)
        await writer.drain()
        return keep


class Front:
    """Both public listeners. ``start`` binds them (a taken port is a ``ServeError`` naming it) and answers
    "not ready" until ``set_ready``; ``drain`` stops accepting, waits for requests in flight until a deadline and
    refuses what is left; ``close`` releases everything."""

    def __init__(
        self,
        *,
        host: str,
        http_port: int,
        grpc_port: int,
        upstream_http: int,
        upstream_grpc: int,
        max_bytes: int,
        max_concurrent: int = 256,
    ) -> None:
        self.host, self.http_port, self.grpc_port = host, http_port, grpc_port
        self.state = _State()
        check = RequestCheck(max_bytes)
        self._http = _HttpProxy(self.state, check, upstream_http)
        self._grpc = _GrpcProxy(self.state, check, f"127.0.0.1:{upstream_grpc}")
        self._max_bytes = max_bytes
        self._max_concurrent = max_concurrent
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._http_server: asyncio.base_events.Server | None = None
        self._grpc_server: Any = None

    def start(self) -> None:
        import grpc

        check_port_free(self.host, self.http_port, "HTTP")
        check_port_free(self.host, self.grpc_port, "gRPC")
        self._grpc_server = grpc.server(
            futures.ThreadPoolExecutor(self._max_concurrent, thread_name_prefix="vtc-grpc"),
            handlers=[_GenericHandler(self._grpc.handler)],
            options=[
                ("grpc.max_receive_message_length", self._max_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=self._max_concurrent,
        )
        try:
            bound = self._grpc_server.add_insecure_port(f"{self.host}:{self.grpc_port}")
        except RuntimeError:
            bound = 0
        if bound != self.grpc_port:
            raise ServeError(f"gRPC port {self.grpc_port} on {self.host} is not available: cannot listen on it")
        try:
            self._http_server = self._loop.run_until_complete(
                asyncio.start_server(self._http.handle, self.host, self.http_port, limit=_HEAD_LIMIT)
            )
        except OSError as exc:
            raise ServeError(
                f"HTTP port {self.http_port} on {self.host} is not available: {exc.strerror or exc}"
            ) from None
        self._grpc_server.start()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vtc-http", daemon=True)
        self._thread.start()

    def set_ready(self) -> None:
        self.state.ready = True

    def in_flight(self) -> int:
        return self.state.in_flight

    def drain(self, deadline: Callable[[], float]) -> int:
        """Refuse new requests, close idle connections and wait until ``deadline()`` (``time.monotonic()``, read
        again while waiting, so that it can move earlier) for the requests in flight; refuse those still running
        then. Returns how many were refused that way."""
        state = self.state
        state.draining = True
        if self._http_server is not None:
            self._call(self._http_server.close)
        self._call(self._close_idle)
        with state.cond:
            while state.in_flight and time.monotonic() < deadline():
                state.cond.wait(max(0.0, min(0.2, deadline() - time.monotonic())))
            left = state.in_flight
        if left:
            state.expired = True
            for task in list(self._http.busy):
                self._call(task.cancel)
            with state.cond:
                state.cond.wait_for(lambda: state.in_flight == 0, timeout=2.0)
        return left

    def _close_idle(self) -> None:
        for writer in list(self._http.idle):
            writer.close()

    def _call(self, fn: Any) -> None:
        if self._thread is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(fn)
        else:
            fn()

    def close(self) -> None:
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=0).wait(5)
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if self._http_server is not None and not self._loop.is_running():
            self._http_server.close()
        if not self._loop.is_running():
            self._loop.close()
        self._grpc.close()


class _GenericHandler:
    """grpc.GenericRpcHandler around a function (subclassing it keeps grpcio's import lazy)."""

    def __new__(cls, handler: Any) -> Any:
        import grpc

        class Handler(grpc.GenericRpcHandler):
            def service(self, details: Any) -> Any:
                return handler(details)

        return Handler()
