// audio.test.mjs: the viewer's pure sound logic: the audio row of the stats overlay (bitrate,
// jitter, loss from the audio inbound-rtp stats) and the unmute button's state.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { formatAudio, formatSummary, soundButton, summarize } from '../stats.js';

/** A Chrome-like report with a video and an audio inbound-rtp at `t` ms. */
function report(t, { audioBytes, received, lost, jitter = 0.004, audio = true }) {
  const stats = [{ id: 'V', type: 'inbound-rtp', kind: 'video', timestamp: t, bytesReceived: 1000 * t }];
  if (audio) {
    stats.push({ id: 'A', type: 'inbound-rtp', kind: 'audio', timestamp: t, bytesReceived: audioBytes, packetsReceived: received, packetsLost: lost, jitter });
  }
  return new Map(stats.map((s) => [s.id, s]));
}

describe('audio stats', () => {
  it('gives bitrate, jitter and loss over the interval', () => {
    const a = summarize(report(1000, { audioBytes: 0, received: 0, lost: 0 }));
    const b = summarize(report(2000, { audioBytes: 8000, received: 95, lost: 5, jitter: 0.0031 }), a.raw);
    assert.equal(b.audio.kbps, 64);
    assert.equal(b.audio.lossPct, 5);
    assert.ok(Math.abs(b.audio.jitterMs - 3.1) < 1e-9);
    assert.equal(formatAudio(b.audio), '64 kbit/s · jitter 3 ms · loss 5.0 %');
    assert.equal(Object.fromEntries(formatSummary(b)).Audio, '64 kbit/s · jitter 3 ms · loss 5.0 %');
  });

  it('without a previous report: no bitrate yet, loss since the start', () => {
    const a = summarize(report(1000, { audioBytes: 500, received: 30, lost: 10 }));
    assert.equal(a.audio.kbps, null);
    assert.equal(a.audio.lossPct, 25);
    assert.equal(formatAudio(a.audio), '– · jitter 4 ms · loss 25.0 %');
  });

  it('counts a falling loss counter (late packets) as no loss', () => {
    const a = summarize(report(1000, { audioBytes: 0, received: 100, lost: 10 }));
    const b = summarize(report(2000, { audioBytes: 100, received: 200, lost: 4 }), a.raw);
    assert.equal(b.audio.lossPct, 0);
  });

  it('shows a dash when there is no sound', () => {
    const s = summarize(report(1000, { audio: false }));
    assert.equal(s.audio, null);
    assert.equal(Object.fromEntries(formatSummary(s)).Audio, '–');
  });
});

describe('sound button', () => {
  it('offers unmute while muted or at zero volume, mute otherwise', () => {
    assert.deepEqual(soundButton(true, 1), { label: 'unmute', pressed: false, icon: '🔇' });
    assert.equal(soundButton(false, 0).label, 'unmute');
    assert.deepEqual(soundButton(false, 0.3), { label: 'mute', pressed: true, icon: '🔉' });
    assert.equal(soundButton(false, 0.8).icon, '🔊');
  });
});
