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
        header = bytearray([0x80 | opcode])
        length = len(payload)
        mask_bit = 0x80 if self.mask else 0
        if length < 126:
            header.append(mask_bit | length)
        elif length < 1 << 16:
            header.append(mask_bit | 126)
            header += struct.pack("!H", length)
        else:
            header.append(mask_bit | 127)
            header += struct.pack("!Q", length)
        if self.mask:
            key = os.urandom(4)
            header += key
            payload = _apply_mask(payload, key)
        with self._send_lock:
            self.sock.sendall(bytes(header) + payload)

    # -- receiving ----------------------------------------------------------------------

    def _read_exact(self, count):
        while len(self._buffer) < count:
            chunk = self.sock.recv(max(65536, count - len(self._buffer)))
            if not chunk:
                raise ConnectionClosed("connection closed by peer")
            self._buffer += chunk
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def recv(self):
        """The next message: ``str`` for text, ``bytes`` for binary. Raises ConnectionClosed."""
        message_opcode = None
        parts = []
        while True:
            first, second = self._read_exact(2)
            fin, opcode = first & 0x80, first & 0x0F
            masked, length = second & 0x80, second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._read_exact(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._read_exact(8))
            key = self._read_exact(4) if masked else None
            payload = self._read_exact(length)
            if key:
                payload = _apply_mask(payload, key)
            if opcode == OP_PING:
                self._send_frame(OP_PONG, payload)
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                self.close()
                raise ConnectionClosed("connection closed by peer")
            if opcode != OP_CONT:
                message_opcode = opcode
            parts.append(payload)
            if fin:
                data = b"".join(parts)
                return data.decode("utf-8") if message_opcode == OP_TEXT else data


def _apply_mask(payload, key):
    # XOR in one big-integer operation: much faster than a Python loop over bytes.
    length = len(payload)
    if length == 0:
        return b""
    repeated = (key * (length // 4 + 1))[:length]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(length, "big")


def connect(host, port, path="/"):
    """Opens a client connection to ``ws://host:port/path``."""
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
