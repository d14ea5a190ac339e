// stats.test.mjs: the stats overlay's pure computations (stats.js) on getStats()-shaped reports:
// rates over an interval, the selected candidate pair, loss, jitter buffer and decode time per
// frame, the glass-to-glass estimate, the rows shown, and the toggle key. No browser.
// Run: node --test web/test/

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { estimateGlassToGlass, formatSummary, isToggleKey, summarize } from '../stats.js';

/** A report as Chrome gives it, at `t` ms, with counters scaled by `k`. */
function report(t, k, { rtt = 0.1, lost = 0 } = {}) {
  return new Map(
    [
      { id: 'T01', type: 'transport', timestamp: t, selectedCandidatePairId: 'CP1' },
      { id: 'CP0', type: 'candidate-pair', timestamp: t, localCandidateId: 'L0', remoteCandidateId: 'R0', currentRoundTripTime: 9 },
      { id: 'CP1', type: 'candidate-pair', timestamp: t, localCandidateId: 'L1', remoteCandidateId: 'R1', currentRoundTripTime: rtt, nominated: true, state: 'succeeded' },
      { id: 'L1', type: 'local-candidate', candidateType: 'srflx', protocol: 'udp' },
      { id: 'R1', type: 'remote-candidate', candidateType: 'relay', protocol: 'udp' },
      { id: 'C1', type: 'codec', mimeType: 'video/H264' },
      {
        id: 'IT1', type: 'inbound-rtp', kind: 'video', timestamp: t, codecId: 'C1',
        bytesReceived: 250_000 * k, framesDecoded: 30 * k, packetsReceived: 200 * k, packetsLost: lost,
        jitterBufferDelay: 0.6 * k, jitterBufferEmittedCount: 30 * k, totalDecodeTime: 0.09 * k,
        frameWidth: 1280, frameHeight: 720, framesPerSecond: 29,
      },
    ].map((s) => [s.id, s]),
  );
}

describe('stats overlay computations', () => {
  it('computes rates over the interval and picks the selected pair', () => {
    const first = summarize(report(1000, 1));
    assert.equal(first.kbps, null, 'no rate without a previous report');
    assert.equal(first.fps, 29, 'falls back to the browser fps');
    const s = summarize(report(2000, 2, { lost: 20 }), first.raw);
    assert.equal(s.fps, 30);
    assert.equal(s.kbps, 2000);
    assert.equal(s.rttMs, 100);
    assert.equal(s.codec, 'H264');
    assert.equal(s.localCandidateType, 'srflx');
    assert.equal(s.remoteCandidateType, 'relay');
    assert.equal(s.lossPct, (20 * 100) / 220);
    assert.ok(Math.abs(s.jitterBufferMs - 20) < 1e-9);
    assert.ok(Math.abs(s.decodeMs - 3) < 1e-9);
    // 50 (half the RTT) + 20 (jitter buffer) + 3 (decode) + 33.3 (one frame at 30 fps).
    assert.ok(Math.abs(s.glassToGlassMs - (50 + 20 + 3 + 1000 / 30)) < 1e-9);
  });

  it('falls back to the nominated pair and survives empty or partial reports', () => {
    const r = report(1000, 1);
    r.delete('T01');
    assert.equal(summarize(r).rttMs, 100);
    // Map-like but not a Map, as RTCStatsReport is.
    const mapLike = { values: () => report(1000, 1).values() };
    assert.equal(summarize(mapLike).codec, 'H264');
    const empty = summarize([]);
    assert.equal(empty.fps, null);
    assert.equal(empty.rttMs, null);
    assert.equal(empty.glassToGlassMs, null);
    const rows = formatSummary(empty);
    assert.ok(rows.every(([, v]) => typeof v === 'string' && v.length > 0));
    assert.equal(rows.find(([k]) => k === 'Glass to glass')[1], '–');
  });

  it('counts a falling loss counter (late packets) as no loss', () => {
    const a = summarize(report(1000, 1, { lost: 10 }));
    const b = summarize(report(2000, 2, { lost: 5 }), a.raw);
    assert.equal(b.lossPct, 0);
  });

  it('says the latency is an estimate and formats units', () => {
    const a = summarize(report(1000, 1));
    const rows = Object.fromEntries(formatSummary(summarize(report(2000, 2), a.raw)));
    assert.match(rows['Glass to glass'], /^≈ \d+ ms \(estimate\)$/);
    assert.equal(rows.Bitrate, '2.00 Mbit/s');
    assert.equal(rows.Frames, '30 fps · 1280×720');
    assert.equal(rows.Path, 'srflx ⇄ relay (udp)');
    assert.equal(rows['Round trip'], '100 ms');
  });

  it('estimates only with the network and jitter buffer known', () => {
    assert.equal(estimateGlassToGlass({ rttMs: null, jitterBufferMs: 5, decodeMs: 1, fps: 30 }), null);
    assert.equal(estimateGlassToGlass({ rttMs: 10, jitterBufferMs: 5, decodeMs: null, fps: 0 }), 10);
  });

  it('toggles on Ctrl+Alt+S only', () => {
    assert.ok(isToggleKey({ ctrlKey: true, altKey: true, code: 'KeyS', key: 's' }));
    assert.ok(!isToggleKey({ ctrlKey: true, altKey: false, code: 'KeyS', key: 's' }));
    assert.ok(!isToggleKey({ ctrlKey: true, altKey: true, metaKey: true, code: 'KeyS', key: 's' }));
    assert.ok(!isToggleKey({ ctrlKey: true, altKey: true, code: 'KeyD', key: 'd' }));
  });
});
