"""The websocket framing, both ends over a real socket pair."""

import os
import socket
import struct
import sys
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from hkube_runtime import ws  # noqa: E402


def pair(test):
    a, b = socket.socketpair()
    test.addCleanup(a.close)
    test.addCleanup(b.close)
    a.settimeout(10)
    b.settimeout(10)
    return ws.Connection(a, mask=True), ws.Connection(b, mask=False), b


def masked_frame(first, payload, key):
    length = len(payload)
    if length < 126:
        header = bytes([first, 0x80 | length])
    elif length < 1 << 16:
        header = bytes([first, 0x80 | 126]) + struct.pack("!H", length)
    else:
        header = bytes([first, 0x80 | 127]) + struct.pack("!Q", length)
    body = bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))
    return header + key + body


class Frames(unittest.TestCase):
    def test_messages_of_every_length_class_both_ways(self):
        client, server, _ = pair(self)
        for size in (0, 1, 125, 126, 127, 65535, 65536, 3 << 20):
            text = "é" * (size // 2) + "x" * (size % 2)
            binary = os.urandom(size)
            # Written on a thread: a large message does not fit in the socket's buffer.
            writer = threading.Thread(target=lambda: (client.send_text(text), client.send_binary(binary)))
            writer.start()
            self.assertEqual(server.recv(), text)
            self.assertEqual(server.recv(), binary)
            writer.join()
            writer = threading.Thread(target=lambda: (server.send_text(text), server.send_binary(binary)))
            writer.start()
            self.assertEqual(client.recv(), text)
            self.assertEqual(client.recv(), binary)
            writer.join()

    def test_the_client_masks_with_the_zero_key(self):
        client, _, raw = pair(self)
        client.send_text("hi")
        self.assertEqual(raw.recv(16), bytes([0x81, 0x80 | 2, 0, 0, 0, 0]) + b"hi")

    def test_a_frame_masked_with_any_key_is_read(self):
        client, _, raw = pair(self)
        for size in (5, 300, 70000):
            payload = ("ab" * size)[:size].encode()
            frame = masked_frame(0x81, payload, b"\x12\x34\x56\x78")
            threading.Thread(target=lambda: raw.sendall(frame)).start()
            self.assertEqual(client.recv(), payload.decode())

    def test_a_fragmented_message_with_a_ping_between_and_split_frames(self):
        client, server, _ = pair(self)
        raw = client.sock  # frames written by hand, as a client other than ours may write them
        data = (
            masked_frame(0x01, b"hel", b"\x01\x02\x03\x04")
            + masked_frame(0x89, b"p", b"\x05\x06\x07\x08")
            + masked_frame(0x80, b"lo", b"\x00\x00\x00\x00")
            + masked_frame(0x82, b"\x00\xff", b"\x09\x09\x09\x09")
        )

        def dribble():
            for i in range(len(data)):  # one byte at a time: every header and payload split
                raw.sendall(data[i : i + 1])

        writer = threading.Thread(target=dribble)
        writer.start()
        self.assertEqual(server.recv(), "hello")
        self.assertEqual(server.recv(), b"\x00\xff")
        writer.join()
        self.assertEqual(raw.recv(16), bytes([0x8A, 1]) + b"p")  # the pong, unmasked from the server

    def test_close_from_the_peer(self):
        client, server, _ = pair(self)
        server.close()
        with self.assertRaises(ws.ConnectionClosed):
            client.recv()


class Connect(unittest.TestCase):
    def _serve_once(self, server):
        """Accepts one client on ``server``, echoes one message, and keeps the request path."""
        seen = {}

        def serve():
            sock, _ = server.accept()
            sock.settimeout(10)
            conn, seen["path"] = ws.accept(sock)
            conn.send_text(conn.recv())
            sock.close()

        thread = threading.Thread(target=serve)
        thread.start()
        self.addCleanup(thread.join)
        return seen

    def test_over_tcp(self):
        server = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(server.close)
        seen = self._serve_once(server)
        conn = ws.connect("127.0.0.1", server.getsockname()[1], "/?fast=1")
        self.addCleanup(conn.close)
        conn.send_text("hello")
        self.assertEqual(conn.recv(), "hello")
        self.assertEqual(seen["path"], "/?fast=1")

    def test_over_a_unix_socket_the_port_is_not_used(self):
        import tempfile

        folder = tempfile.mkdtemp()
        path = os.path.join(folder, "s")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        self.addCleanup(lambda: (server.close(), os.unlink(path), os.rmdir(folder)))
        seen = self._serve_once(server)
        conn = ws.connect("127.0.0.1", 1, "/?fast=1", unix_path=path)  # port 1: nothing there
        self.addCleanup(conn.close)
        self.assertEqual(conn.sock.family, socket.AF_UNIX)
        conn.send_text("hello")
        self.assertEqual(conn.recv(), "hello")
        self.assertEqual(seen["path"], "/?fast=1")


if __name__ == "__main__":
    unittest.main()
