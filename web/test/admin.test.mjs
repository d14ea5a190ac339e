// admin.test.mjs: the /admin page's pure helpers (how uptime and bitrate read); the page itself
// is tested in Chromium by e2e/admin.e2e.mjs.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { formatBitrate, formatUptime } from '../admin.js';

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
});
