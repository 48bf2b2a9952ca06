'use strict';
/**
 * A minimal RFC 6455 websocket endpoint over a plain TCP socket.
 *
 * Just what the runtime needs, with no dependency (Node 20 has no websocket client): the client
 * handshake, text and binary messages of any size (fragmented or not, 64-bit lengths included),
 * ping/pong and close. The frame code is shared by both ends, so tests can play the server with
 * `accept()`.
 */

const crypto = require('node:crypto');
const net = require('node:net');
const { once } = require('node:events');

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const OP = { CONT: 0x0, TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9, PONG: 0xa };

class ConnectionClosed extends Error {
  constructor(message = 'connection closed by peer') {
    super(message);
    this.name = 'ConnectionClosed';
  }
}

function acceptKey(key) {
  return crypto.createHash('sha1').update(key + GUID).digest('base64');
}

/** XORs `payload` with the 4-byte `key` into `target` (RFC 6455 §5.3). */
function applyMask(payload, key, target) {
  for (let i = 0; i < payload.length; i++) target[i] = payload[i] ^ key[i & 3];
  return target;
}

/** One websocket connection. `mask` is true on the client side. */
class Connection {
  constructor(socket, { mask, buffered }) {
    this.socket = socket;
    this.mask = mask;
    this.closed = false;
    this._chunks = [];
    this._size = 0;
    this._fragments = [];
    this._fragmentOpcode = null;
    this._messages = [];
    this._waiters = [];
    socket.on('data', (chunk) => this._onData(chunk));
    socket.on('close', () => this._onClosed());
    socket.on('error', () => this._onClosed());
    if (buffered && buffered.length) this._onData(buffered);
    socket.resume();
  }

  // -- sending ------------------------------------------------------------------------------

  sendText(text) {
    this.sendFrame(OP.TEXT, Buffer.from(text, 'utf8'));
  }

  sendBinary(data) {
    this.sendFrame(OP.BINARY, Buffer.from(data));
  }

  /** Sends one frame; `fin: false` starts or continues a fragmented message. */
  sendFrame(opcode, payload, { fin = true } = {}) {
    if (this.closed) throw new ConnectionClosed('the connection is closed');
    const length = payload.length;
    const extra = length < 126 ? 0 : length < 0x10000 ? 2 : 8;
    const header = Buffer.alloc(2 + extra + (this.mask ? 4 : 0));
    header[0] = (fin ? 0x80 : 0) | opcode;
    header[1] = (this.mask ? 0x80 : 0) | (extra === 0 ? length : extra === 2 ? 126 : 127);
    if (extra === 2) header.writeUInt16BE(length, 2);
    if (extra === 8) header.writeBigUInt64BE(BigInt(length), 2);
    if (this.mask) {
      const key = crypto.randomBytes(4);
      key.copy(header, 2 + extra);
      payload = applyMask(payload, key, Buffer.allocUnsafe(length));
    }
    this.socket.cork();
    this.socket.write(header);
    if (length) this.socket.write(payload);
    this.socket.uncork();
  }

  close(code = 1000) {
    if (this.closed) return;
    const payload = Buffer.alloc(2);
    payload.writeUInt16BE(code);
    try {
      this.sendFrame(OP.CLOSE, payload);
    } catch {
      // The socket is already gone: nothing to tell the peer.
    }
    this.socket.end();
    this._onClosed();
  }

  // -- receiving ----------------------------------------------------------------------------

  /** The next message: a string for text, a Buffer for binary. Rejects with ConnectionClosed. */
  recv() {
    if (this._messages.length) return Promise.resolve(this._messages.shift());
    if (this.closed) return Promise.reject(new ConnectionClosed());
    return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
  }

  _deliver(message) {
    const waiter = this._waiters.shift();
    if (waiter) waiter.resolve(message);
    else this._messages.push(message);
  }

  _onClosed() {
    this.closed = true;
    for (const waiter of this._waiters.splice(0)) waiter.reject(new ConnectionClosed());
  }

  _onData(chunk) {
    this._chunks.push(chunk);
    this._size += chunk.length;
    // A big payload arrives in many chunks: parse (and copy) only once the whole frame is in.
    while (!this.closed && this._size >= 2) {
      const head = this._peek(Math.min(this._size, 14));
      const length7 = head[1] & 0x7f;
      const extra = length7 === 126 ? 2 : length7 === 127 ? 8 : 0;
      const masked = (head[1] & 0x80) !== 0;
      const headerLength = 2 + extra + (masked ? 4 : 0);
      if (head.length < headerLength) return;
      let length = length7;
      if (extra === 2) length = head.readUInt16BE(2);
      if (extra === 8) {
        const big = head.readBigUInt64BE(2);
        if (big > BigInt(Number.MAX_SAFE_INTEGER)) return this.close(1009);
        length = Number(big);
      }
      if (this._size < headerLength + length) return;
      const frame = this._take(headerLength + length);
      let payload = frame.subarray(headerLength);
      if (masked) payload = applyMask(payload, frame.subarray(2 + extra, headerLength), payload);
      this._onFrame(head[0] & 0x80, head[0] & 0x0f, payload);
    }
  }

  _onFrame(fin, opcode, payload) {
    if (opcode === OP.PING) return this.sendFrame(OP.PONG, payload);
    if (opcode === OP.PONG) return;
    if (opcode === OP.CLOSE) return this.close();
    if (opcode !== OP.CONT) this._fragmentOpcode = opcode;
    this._fragments.push(payload);
    if (!fin) return;
    const data = this._fragments.length === 1 ? this._fragments[0] : Buffer.concat(this._fragments);
    this._fragments = [];
    this._deliver(this._fragmentOpcode === OP.TEXT ? data.toString('utf8') : data);
  }

  /** The first `count` buffered bytes (count <= buffered), without consuming them. */
  _peek(count) {
    if (this._chunks[0].length < count) this._chunks = [Buffer.concat(this._chunks, this._size)];
    return this._chunks[0].subarray(0, count);
  }

  /** Removes and returns the first `count` buffered bytes (count <= buffered). */
  _take(count) {
    this._size -= count;
    const first = this._chunks[0];
    if (first.length >= count) {
      if (first.length === count) this._chunks.shift();
      else this._chunks[0] = first.subarray(count);
      return first.subarray(0, count);
    }
    const out = Buffer.allocUnsafe(count);
    for (let offset = 0; offset < count; ) {
      const chunk = this._chunks[0];
      const n = Math.min(chunk.length, count - offset);
      chunk.copy(out, offset, 0, n);
      if (n === chunk.length) this._chunks.shift();
      else this._chunks[0] = chunk.subarray(n);
      offset += n;
    }
    return out;
  }
}

/** Reads an HTTP head off `socket`: its lines, lower-cased headers, and the bytes after it. */
function readHead(socket) {
  return new Promise((resolve, reject) => {
    let received = Buffer.alloc(0);
    const cleanup = () => {
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('error', onError);
      socket.pause(); // the Connection resumes it once it listens
    };
    const onData = (chunk) => {
      received = Buffer.concat([received, chunk]);
      const end = received.indexOf('\r\n\r\n');
      if (end < 0) return;
      cleanup();
      const lines = received.subarray(0, end).toString('latin1').split('\r\n');
      const headers = {};
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(':');
        if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      resolve({ lines, headers, rest: received.subarray(end + 4) });
    };
    const onClose = () => {
      cleanup();
      reject(new ConnectionClosed('connection closed during the websocket handshake'));
    };
    const onError = (err) => {
      cleanup();
      reject(err);
    };
    socket.on('data', onData);
    socket.on('close', onClose);
    socket.on('error', onError);
  });
}

/**
 * Opens a client connection to `ws://host:port<path>`, over the Unix socket `unixPath` when given
 * (`host` and `port` are then only the Host header).
 */
async function connect(host, port, path = '/', unixPath = null) {
  const socket = unixPath ? net.connect({ path: unixPath }) : net.connect({ host, port });
  try {
    await once(socket, 'connect');
    if (!unixPath) socket.setNoDelay(true);
    const key = crypto.randomBytes(16).toString('base64');
    socket.write(
      `GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
    const { lines, headers, rest } = await readHead(socket);
    if (lines[0].split(' ')[1] !== '101') throw new ConnectionClosed(`websocket handshake refused: ${lines[0]}`);
    if (headers['sec-websocket-accept'] !== acceptKey(key)) {
      throw new ConnectionClosed('websocket handshake: bad Sec-WebSocket-Accept');
    }
    return new Connection(socket, { mask: true, buffered: rest });
  } catch (err) {
    socket.destroy();
    throw err;
  }
}

/** Server side of the handshake, for tests: resolves with `{ conn, path }`. */
async function accept(socket) {
  socket.setNoDelay(true);
  const { lines, headers, rest } = await readHead(socket);
  const path = lines[0].split(' ')[1];
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${acceptKey(headers['sec-websocket-key'] || '')}\r\n\r\n`,
  );
  return { conn: new Connection(socket, { mask: false, buffered: rest }), path };
}

module.exports = { Connection, ConnectionClosed, OP, acceptKey, accept, connect };
