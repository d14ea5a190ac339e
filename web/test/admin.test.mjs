// admin.test.mjs: the /admin page's pure helpers (how uptime, bitrate, transport and control read); the page itself
// is tested in Chromium by e2e/admin.e2e.mjs.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { formatBitrate, formatControl, formatTransport, formatUptime } from '../admin.js';

describe('admin page helpers', () => {
  it('reads uptime in the two largest units', () => {
    assert.equal(formatUptime(undefined), '—');
    assert.equal(formatUptime(42), '42s');
    assert.equal(formatUptime(125), '2m 5s');
    assert.equal(formatUptime(3 * 3600 + 7 * 60 + 5), '3h 7m');
    assert.equal(formatUptime(2 * 86400 + 5 * 3600), '2d 5h');
  });
  it('reads bitrate in kbit/s or Mbit/s', () => {
    assert.equal(formatBitrate(null), '—');
    assert.equal(formatBitrate(812.4), '812 kbit/s');
    assert.equal(formatBitrate(2450), '2.5 Mbit/s');
  });
  it('reads the transport from the selected candidate type, or WebSocket', () => {
    assert.equal(formatTransport({ connected: false }), 'connecting');
    assert.equal(formatTransport({ connected: true }), 'WebRTC', 'an older agent says no type');
    assert.equal(formatTransport({ connected: true, transport: 'host' }), 'WebRTC direct (host)');
    assert.equal(formatTransport({ connected: true, transport: 'srflx' }), 'WebRTC direct (srflx)');
    assert.equal(formatTransport({ connected: true, transport: 'relay' }), 'WebRTC via TURN (relay)');
    assert.equal(formatTransport({ connected: true, transport: 'websocket' }), 'WebSocket');
  });
  it('says who holds control, or what the link allows when the agent does not say', () => {
    assert.equal(formatControl({ permission: 'control', holdsControl: true }), 'in control');
    assert.equal(formatControl({ permission: 'admin', holdsControl: false }), 'not in control');
    assert.equal(formatControl({ permission: 'view', holdsControl: false }), 'watches');
    assert.equal(formatControl({ permission: 'control', holdsControl: null }), 'may take control');
  });
});
