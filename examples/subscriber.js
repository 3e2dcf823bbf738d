#!/usr/bin/env node
// An edgead result subscriber in plain Node.js: no npm packages, no edgead.
//
// It speaks just enough ZMTP 3.0 (the ZeroMQ wire protocol, NULL security) to act as a SUB socket, and decodes the
// msgpack maps itself, so it proves a client in another language can read every result with nothing but the
// documented protocol (docs/protocol.md). Each message is printed as one JSON line:
//   {"topic": "edgead/result/cam1", "msg": {...}}    msgpack bin values become {"$bin": "<base64>"}
//
// Usage: node examples/subscriber.js tcp://HOST:PORT [TOPIC_PREFIX] [--count N]
//   TOPIC_PREFIX defaults to "edgead/" (results and status); --count exits after N result messages.
// A production client would use the `zeromq` and `@msgpack/msgpack` npm packages instead of the code below.
"use strict";
const net = require("net");

// ---- msgpack (the subset edgead sends is all of msgpack except ext types, which are refused) ----
function decodeMsgpack(buf) {
  let pos = 0;
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const need = (n) => { if (pos + n > buf.length) throw new Error("msgpack: truncated"); };
  const u8 = () => { need(1); return buf[pos++]; };
  const take = (n) => { need(n); const out = buf.subarray(pos, pos + n); pos += n; return out; };
  const num = (get, n) => { need(n); const v = get.call(view, pos); pos += n; return v; };
  const big = (v) => { const n = Number(v); if (!Number.isSafeInteger(n)) throw new Error("msgpack: int too large"); return n; };
  const str = (n) => take(n).toString("utf8");
  const arr = (n) => { const a = []; for (let i = 0; i < n; i++) a.push(value()); return a; };
  const map = (n) => {
    const m = {};
    for (let i = 0; i < n; i++) {
      const k = value();
      if (typeof k !== "string") throw new Error("msgpack: non-string map key");
      m[k] = value();
    }
    return m;
  };
  function value() {
    const b = u8();
    if (b <= 0x7f) return b;
    if (b >= 0xe0) return b - 0x100;
    if ((b & 0xf0) === 0x80) return map(b & 0x0f);
    if ((b & 0xf0) === 0x90) return arr(b & 0x0f);
    if ((b & 0xe0) === 0xa0) return str(b & 0x1f);
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return { $bin: take(u8()).toString("base64") };
      case 0xc5: return { $bin: take(num(DataView.prototype.getUint16, 2)).toString("base64") };
      case 0xc6: return { $bin: take(num(DataView.prototype.getUint32, 4)).toString("base64") };
      case 0xca: return num(DataView.prototype.getFloat32, 4);
      case 0xcb: return num(DataView.prototype.getFloat64, 8);
      case 0xcc: return u8();
      case 0xcd: return num(DataView.prototype.getUint16, 2);
      case 0xce: return num(DataView.prototype.getUint32, 4);
      case 0xcf: return big(num(DataView.prototype.getBigUint64, 8));
      case 0xd0: return num(DataView.prototype.getInt8, 1);
      case 0xd1: return num(DataView.prototype.getInt16, 2);
      case 0xd2: return num(DataView.prototype.getInt32, 4);
      case 0xd3: return big(num(DataView.prototype.getBigInt64, 8));
      case 0xd9: return str(u8());
      case 0xda: return str(num(DataView.prototype.getUint16, 2));
      case 0xdb: return str(num(DataView.prototype.getUint32, 4));
      case 0xdc: return arr(num(DataView.prototype.getUint16, 2));
      case 0xdd: return arr(num(DataView.prototype.getUint32, 4));
      case 0xde: return map(num(DataView.prototype.getUint16, 2));
      case 0xdf: return map(num(DataView.prototype.getUint32, 4));
      default: throw new Error(`msgpack: type byte 0x${b.toString(16)} (ext types are not part of the protocol)`);
    }
  }
  const out = value();
  if (pos !== buf.length) throw new Error("msgpack: trailing bytes");
  return out;
}

// ---- ZMTP 3.0 SUB over TCP, NULL mechanism ----
function greeting() {
  const g = Buffer.alloc(64);
  g[0] = 0xff; g[9] = 0x7f; g[10] = 3; g[11] = 0;  // signature, version 3.0
  g.write("NULL", 12, "ascii");  // mechanism, zero padded to 20 bytes; as-server 0; filler
  return g;
}

function frame(body, { more = false, command = false } = {}) {
  const flags = (more ? 1 : 0) | (command ? 4 : 0);
  if (body.length < 256) return Buffer.concat([Buffer.from([flags, body.length]), body]);
  const size = Buffer.alloc(8);
  size.writeBigUInt64BE(BigInt(body.length));
  return Buffer.concat([Buffer.from([flags | 2]), size, body]);
}

function ready() {
  const name = Buffer.from("Socket-Type"), value = Buffer.from("SUB"), len = Buffer.alloc(4);
  len.writeUInt32BE(value.length);
  return frame(Buffer.concat([Buffer.from([5]), Buffer.from("READY"), Buffer.from([name.length]), name, len, value]),
               { command: true });
}

function subscribe(endpoint, prefix, onMessage, onReady) {
  const m = /^tcp:\/\/([^:]+):(\d+)$/.exec(endpoint);
  if (!m) throw new Error(`only tcp://HOST:PORT endpoints are supported, got ${endpoint}`);
  const sock = net.connect(Number(m[2]), m[1]);
  let buf = Buffer.alloc(0), greeted = false, parts = [];
  sock.on("connect", () => sock.write(greeting()));
  sock.on("data", (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    if (!greeted) {
      if (buf.length < 64) return;
      if (buf[0] !== 0xff || buf[9] !== 0x7f || buf[10] < 3) throw new Error("peer is not a ZMTP 3 socket");
      buf = buf.subarray(64);
      greeted = true;
      sock.write(ready());
      sock.write(frame(Buffer.concat([Buffer.from([1]), Buffer.from(prefix)])));  // subscribe (ZMTP 3.0 form)
      onReady();
    }
    for (;;) {
      if (buf.length < 2) return;
      const flags = buf[0], long = flags & 2, head = long ? 9 : 2;
      if (buf.length < head) return;
      const size = long ? Number(buf.readBigUInt64BE(1)) : buf[1];
      if (buf.length < head + size) return;
      const body = buf.subarray(head, head + size);
      buf = buf.subarray(head + size);
      if (flags & 4) continue;  // a command (READY, PING): nothing to do for a subscriber
      parts.push(Buffer.from(body));
      if (!(flags & 1)) { onMessage(parts); parts = []; }
    }
  });
  sock.on("error", (err) => { console.error(`subscriber: ${err.message}`); process.exit(2); });
  return sock;
}

function main() {
  const args = process.argv.slice(2);
  const countAt = args.indexOf("--count");
  const count = countAt >= 0 ? Number(args.splice(countAt, 2)[1]) : Infinity;
  const [endpoint, prefix = "edgead/"] = args;
  if (!endpoint) { console.error("usage: node subscriber.js tcp://HOST:PORT [TOPIC_PREFIX] [--count N]"); process.exit(2); }
  let results = 0;
  const sock = subscribe(endpoint, prefix, (parts) => {
    if (parts.length !== 2) throw new Error(`expected 2 parts (topic, payload), got ${parts.length}`);
    const topic = parts[0].toString("utf8"), msg = decodeMsgpack(parts[1]);
    process.stdout.write(JSON.stringify({ topic, msg }) + "\n");
    if (topic.startsWith("edgead/result/") && ++results >= count) { sock.end(); process.exit(0); }
  }, () => console.error("subscriber: connected"));
}

main();
