// Unit tests of wsplayer.js's pure parts: the frame header, the transport choice and the rule
// that makes an 'auto' page fall back to the WebSocket stream, the stream URL, input mapping,
// and when an ended stream is tried again.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  parseFrame, codecString, chooseTransport, shouldFallBack, streamUrl, framePoint, xButton,
  FALLBACK_AFTER_MS, FALLBACK_NOTICE, wsReconnectPlan,
} from '../wsplayer.js';

function frame({ kind = 1, flags = 1, codec = 1, session = '', pts = 42n, capture = 7n, payload = [0, 0, 0, 1, 0x67] } = {}) {
  const s = new TextEncoder().encode(session);
  const buf = new ArrayBuffer(4 + s.length + 16 + payload.length);
  const v = new DataView(buf);
  v.setUint8(0, kind); v.setUint8(1, flags); v.setUint8(2, codec); v.setUint8(3, s.length);
  new Uint8Array(buf, 4, s.length).set(s);
  v.setBigUint64(4 + s.length, pts);
  v.setBigUint64(12 + s.length, capture);
  new Uint8Array(buf, 20 + s.length).set(payload);
  return buf;
}

test('frames parse as the protocol frames them (same bytes as the Rust encoder)', () => {
  const f = parseFrame(frame());
  assert.equal(f.keyframe, true);
  assert.equal(f.codec, codecString(1));
  assert.equal(f.ptsUs, 42);
  assert.equal(f.captureUs, 7);
  assert.deepEqual([...f.data], [0, 0, 0, 1, 0x67]);
  const d = parseFrame(frame({ flags: 0, codec: 2, session: 'ab' }));
  assert.equal(d.keyframe, false);
  assert.equal(d.codec, 'vp8');
  assert.deepEqual([...d.data], [0, 0, 0, 1, 0x67]);
});

test('malformed frames are null, never a throw', () => {
  assert.equal(parseFrame(new ArrayBuffer(0)), null);
  assert.equal(parseFrame(frame({ kind: 2 })), null);
  assert.equal(parseFrame(frame({ codec: 9 })), null);
  assert.equal(parseFrame(frame().slice(0, 10)), null);
  assert.equal(parseFrame('text'), null);
  const good = frame({ session: 'abc' });
  for (let i = 0; i < good.byteLength; i++) parseFrame(good.slice(0, i));
});

test('?transport= picks ws, webrtc or auto', () => {
  assert.equal(chooseTransport('?transport=ws'), 'ws');
  assert.equal(chooseTransport('?token=x&transport=webrtc'), 'webrtc');
  assert.equal(chooseTransport(''), 'auto');
  assert.equal(chooseTransport('?transport=carrier-pigeon'), 'auto');
});

test('an auto page falls back on ICE failure or a long ICE check, never once connected or when forbidden', () => {
  assert.equal(shouldFallBack({ transport: 'auto', errorCode: 'ice_failed' }), true);
  assert.equal(shouldFallBack({ transport: 'auto', errorCode: 'connect_timeout' }), true);
  assert.equal(shouldFallBack({ transport: 'auto', errorCode: 'vm_offline' }), false);
  assert.equal(shouldFallBack({ transport: 'webrtc', errorCode: 'ice_failed' }), false);
  assert.equal(shouldFallBack({ transport: 'auto', checkingSinceMs: 1000, nowMs: 1000 + FALLBACK_AFTER_MS }), true);
  assert.equal(shouldFallBack({ transport: 'auto', checkingSinceMs: 1000, nowMs: 1000 + FALLBACK_AFTER_MS - 1 }), false);
  assert.equal(shouldFallBack({ transport: 'auto', checkingSinceMs: null, nowMs: 1e9 }), false);
  assert.equal(shouldFallBack({ transport: 'auto', errorCode: 'ice_failed', connected: true }), false);
  // No WebCodecs (http:// off localhost): the page keeps WebRTC's own error instead of a blank canvas.
  assert.equal(shouldFallBack({ transport: 'auto', errorCode: 'ice_failed', canDecode: false }), false);
  assert.ok(FALLBACK_AFTER_MS <= 4000, 'the desktop must show within 5 s of page load');
  assert.match(FALLBACK_NOTICE, /UDP blocked/);
});

test('the stream URL follows the page scheme and carries the token', () => {
  assert.equal(streamUrl('http://h:8080/vm/demo', 'demo', 'a.b'), 'ws://h:8080/api/vms/demo/stream?token=a.b');
  assert.equal(streamUrl('https://h/vm/demo', 'demo', ''), 'wss://h/api/vms/demo/stream');
});

test('pointer positions map to frame pixels, clamped; buttons to X numbers', () => {
  const rect = { left: 10, top: 20, width: 200, height: 100 };
  assert.deepEqual(framePoint(110, 70, rect, 400, 200), { x: 200, y: 100 });
  assert.deepEqual(framePoint(-50, 999, rect, 400, 200), { x: 0, y: 199 });
  assert.deepEqual([0, 1, 2, 3, 4, 5].map(xButton), [1, 2, 3, 8, 9, null]);
});

test('an ended WebSocket stream is tried again with a backoff, unless the link is no longer valid', () => {
  for (const code of ['vm_offline', 'agent_error', null, 'something_new']) {
    assert.deepEqual(wsReconnectPlan(code, 1), { retry: true, delayMs: 1000 }, String(code));
  }
  assert.equal(wsReconnectPlan('vm_offline', 2).delayMs, 2000);
  assert.equal(wsReconnectPlan('vm_offline', 4).delayMs, 8000);
  assert.equal(wsReconnectPlan('vm_offline', 50).delayMs, 10000);
  for (const code of ['link_expired', 'link_revoked', 'unauthorized', 'forbidden', 'not_found']) {
    assert.equal(wsReconnectPlan(code, 1).retry, false, code);
  }
});
