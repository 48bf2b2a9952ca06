"""A minimal RFC 6455 websocket endpoint over a plain socket.

Just what the runtime needs: the client handshake, text and binary messages of any size
(fragmented or not), ping/pong and close. The frame code is shared by both ends so tests can
play the server with it.
"""

import base64
import hashlib
import os
import socket
import struct
import threading
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class ConnectionClosed(Exception):
    """The peer closed the connection (or it broke)."""


def accept_key(key):
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + GUID).digest()).decode("ascii")


class Connection:
    """One websocket connection. ``mask`` is True on the client side (RFC 6455 §5.3)."""

    def __init__(self, sock, mask, buffered=b""):
        self.sock = sock
        self.mask = mask
        self._buffer = bytearray(buffered)
        self._send_lock = threading.Lock()
        self.closed = False

    # -- sending ------------------------------------------------------------------------

    def send_text(self, text):
        self._send_frame(OP_TEXT, text.encode("utf-8"))

    def send_binary(self, data):
        self._send_frame(OP_BINARY, bytes(data))

    def close(self, code=1000):
        if self.closed:
            return
        try:
            self._send_frame(OP_CLOSE, struct.pack("!H", code))
        except OSError:
            pass
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def _send_frame(self, opcode, payload):
        length = len(payload)
        first = 0x80 | opcode
        mask_bit = 0x80 if self.mask else 0
        if length < 126:
            header = _HEAD2(first, mask_bit | length)
        elif length < 1 << 16:
            header = _HEAD4(first, mask_bit | 126, length)
        else:
            header = _HEAD10(first, mask_bit | 127, length)
        if self.mask:
            # The client must mask (RFC 6455 §5.3) but may pick any key. The key exists so a
            # browser's script cannot put chosen bytes on the wire that a proxy or cache between
            # it and the server mistakes for HTTP. This client is no browser and only talks to its
            # own sidecar over loopback, so it always uses the zero key, with which masking is
            # the identity: no os.urandom call and no pass over the payload.
            header += _ZERO_KEY
        with self._send_lock:
            if length < _JOIN_BYTES:
                self.sock.sendall(header + payload)
            else:
                # A large payload is not copied to put its header in front.
                self.sock.sendall(header)
                self.sock.sendall(payload)

    # -- receiving ----------------------------------------------------------------------

    def _fill(self, count, poll=False):
        """Reads until the buffer holds at least ``count`` bytes (``poll``: see ``recv``)."""
        buffer = self._buffer
        while len(buffer) < count:
            want = max(65536, count - len(buffer))
            try:
                chunk = self.sock.recv(want, _DONTWAIT)
            except BlockingIOError:
                chunk = self._poll_then_block(want) if poll else self.sock.recv(want)
            if not chunk:
                raise ConnectionClosed("connection closed by peer")
            buffer += chunk

    def _poll_then_block(self, want):
        """Reads, polling for up to ``_POLL`` seconds before blocking.

        A chain's next task comes back within tens of microseconds of a result. Blocking at
        once put this process to sleep, and the kernel ran the sidecar it had just woken on
        this core: the two ends took turns on one core and migrated between the two. Polling
        keeps this process on its core and the sidecar on the other, and the reply needs no
        wake-up. Measured on the 40-step chain of no-op tasks (2 cores, median of 300 chains,
        `perf stat`): 5.4–7.1 ms with 650–5,300 CPU migrations, against 2.6–3.9 ms with 50–190.
        Each poll yields the core to any other thread ready on it (``sched_yield``), so a
        worker waiting for work takes nothing from the sidecar or other workers on a busy
        machine; an idle one pays at most ``_POLL`` once, then blocks.
        """
        sock = self.sock
        deadline = _clock() + _POLL
        while _clock() < deadline:
            _yield()
            try:
                return sock.recv(want, _DONTWAIT)
            except BlockingIOError:
                pass
        return sock.recv(want)

    def _frame(self, poll=False):
        """The next frame as (first byte, payload bytes or bytearray), unmasked.

        The header is parsed where it lies in the buffer and the payload copied out once.
        """
        buffer = self._buffer
        if len(buffer) < 2:
            self._fill(2, poll)
        second = buffer[1]
        length = second & 0x7F
        start = 2
        if length == 126:
            if len(buffer) < 4:
                self._fill(4, poll)
            length = _U16(buffer, 2)[0]
            start = 4
        elif length == 127:
            if len(buffer) < 10:
                self._fill(10, poll)
            length = _U64(buffer, 2)[0]
            start = 10
        masked = second & 0x80
        if masked:
            start += 4
            if len(buffer) < start:
                self._fill(start, poll)
        key = bytes(buffer[start - 4 : start]) if masked else None
        end = start + length
        first = buffer[0]
        if len(buffer) >= end:
            payload = buffer[start:end]  # one copy
            del buffer[:end]
        else:
            # The rest of the payload is read straight into its own buffer: no copy of a large
            # message through the socket buffer, and nothing of the next frame is read.
            payload = bytearray(length)
            view = memoryview(payload)
            have = len(buffer) - start
            view[:have] = buffer[start:]
            del buffer[:]
            while have < length:
                got = self.sock.recv_into(view[have:])
                if not got:
                    raise ConnectionClosed("connection closed by peer")
                have += got
            view.release()
        if key is not None and key != _ZERO_KEY:
            payload = _apply_mask(payload, key)
        return first, payload

    def recv(self, poll=False):
        """The next message: ``str`` for text, ``bytes`` for binary. Raises ConnectionClosed.

        ``poll``: wait for it by polling a moment before blocking (``_poll_then_block``), for a
        reader with nothing else to do. A thread reading while another runs a task blocks at
        once: its polls would take the GIL from the task.
        """
        message_opcode = None
        parts = []
        while True:
            first, payload = self._frame(poll)
            opcode = first & 0x0F
            if opcode == OP_TEXT and first & 0x80:
                return payload.decode("utf-8")  # the common case: one whole text frame
            if opcode == OP_PING:
                self._send_frame(OP_PONG, bytes(payload))
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                self.close()
                raise ConnectionClosed("connection closed by peer")
            if opcode != OP_CONT:
                message_opcode = opcode
            parts.append(payload)
            if first & 0x80:
                data = parts[0] if len(parts) == 1 else b"".join(parts)
                if message_opcode == OP_TEXT:
                    return data.decode("utf-8")
                return data if isinstance(data, bytes) else bytes(data)


_HEAD2 = struct.Struct("!BB").pack
_HEAD4 = struct.Struct("!BBH").pack
_HEAD10 = struct.Struct("!BBQ").pack
_U16 = struct.Struct("!H").unpack_from
_U64 = struct.Struct("!Q").unpack_from
_ZERO_KEY = b"\0\0\0\0"
# Not every platform has it; without it the first attempt simply blocks.
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
# How long a read polls before it blocks (see Connection._poll_then_block).
_POLL = 0.0002 if _DONTWAIT else 0.0
_clock = time.perf_counter
_yield = getattr(os, "sched_yield", lambda: None)
# Payloads below this are sent in one piece with their header (one copy, one syscall).
_JOIN_BYTES = 64 * 1024


def _apply_mask(payload, key):
    # XOR in one big-integer operation: much faster than a Python loop over bytes.
    length = len(payload)
    if length == 0:
        return b""
    repeated = (key * (length // 4 + 1))[:length]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(length, "big")


def connect(host, port, path="/", unix_path=None):
    """Opens a client connection to ``ws://host:port/path``, over the Unix socket ``unix_path``
    when given (``host`` is then only the Host header)."""
    if unix_path:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(unix_path)
        except OSError:
            sock.close()
            raise
    else:
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    request = (
        "GET {path} HTTP/1.1\r\n"
        "Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).format(path=path, host=host, port=port, key=key)
    sock.sendall(request.encode("ascii"))
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionClosed("connection closed during the websocket handshake")
        response += chunk
    head, _, rest = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if " 101 " not in lines[0] + " ":
        raise ConnectionClosed("websocket handshake refused: " + lines[0])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise ConnectionClosed("websocket handshake: bad Sec-WebSocket-Accept")
    return Connection(sock, mask=True, buffered=rest)


def accept(sock):
    """Server side of the handshake, for tests: returns (Connection, request path)."""
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionClosed("connection closed during the websocket handshake")
        request += chunk
    head, _, rest = request.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    response = (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Accept: {}\r\n\r\n"
    ).format(accept_key(headers["sec-websocket-key"]))
    sock.sendall(response.encode("ascii"))
    return Connection(sock, mask=False, buffered=rest), path
