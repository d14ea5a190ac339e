// stats.js: the viewer's stats overlay (toggled with Ctrl+Alt+S or its button): frames per second,
// bitrate, round-trip time, codec, ICE candidate pair type, packet loss, jitter buffer, decode time
// and an *estimated* glass-to-glass latency, read from RTCPeerConnection.getStats() once a second.
// `summarize` and `formatSummary` are pure (unit-tested in node); `StatsOverlay` is the DOM part.
// It only reads stats: it never changes the connection.

/** How often the overlay refreshes, ms. */
export const REFRESH_MS = 1000;

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/**
 * The numbers the overlay shows, from one getStats() report (an RTCStatsReport, a Map, or an
 * array of stats objects)
 * and the `raw` counters of the previous summary (null on the first call). Rates are over the
 * interval between the two reports; without a previous one they are null (fps falls back to the
 * browser's own framesPerSecond).
 */
export function summarize(report, prevRaw = null) {
  // RTCStatsReport is Map-like (but not a Map): take its values; arrays are taken as they are.
  const all = Array.isArray(report) ? report : typeof report?.values === 'function' ? [...report.values()] : [];
  const byId = new Map(all.map((s) => [s.id, s]));
  const inbound = all.find((s) => s.type === 'inbound-rtp' && (s.kind ?? s.mediaType) === 'video');
  const audioIn = all.find((s) => s.type === 'inbound-rtp' && (s.kind ?? s.mediaType) === 'audio');
  const transport = all.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
  const pair =
    byId.get(transport?.selectedCandidatePairId) ??
    all.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') ??
    all.find((s) => s.type === 'candidate-pair' && s.selected);
  const local = byId.get(pair?.localCandidateId);
  const remote = byId.get(pair?.remoteCandidateId);
  const codec = byId.get(inbound?.codecId);

  const raw = {
    timestamp: num(inbound?.timestamp) ?? num(pair?.timestamp),
    bytesReceived: num(inbound?.bytesReceived),
    framesDecoded: num(inbound?.framesDecoded),
    packetsLost: num(inbound?.packetsLost),
    packetsReceived: num(inbound?.packetsReceived),
    jitterBufferDelay: num(inbound?.jitterBufferDelay),
    jitterBufferEmittedCount: num(inbound?.jitterBufferEmittedCount),
    totalDecodeTime: num(inbound?.totalDecodeTime),
    audioTimestamp: num(audioIn?.timestamp),
    audioBytes: num(audioIn?.bytesReceived),
    audioLost: num(audioIn?.packetsLost),
    audioPackets: num(audioIn?.packetsReceived),
  };
  const delta = (k) => {
    const a = prevRaw?.[k];
    const b = raw[k];
    return a === null || a === undefined || b === null ? null : b - a;
  };
  const secs = delta('timestamp') !== null ? delta('timestamp') / 1000 : null;
  const rate = (d) => (d !== null && secs && secs > 0 ? d / secs : null);
  const per = (a, b) => (a !== null && b !== null && b > 0 ? a / b : null);

  const fps = rate(delta('framesDecoded')) ?? num(inbound?.framesPerSecond);
  const kbps = rate(delta('bytesReceived') === null ? null : (delta('bytesReceived') * 8) / 1000);
  const lostNow = delta('packetsLost');
  const recvNow = delta('packetsReceived');
  const lossPct =
    lostNow !== null && recvNow !== null
      ? per(Math.max(0, lostNow) * 100, Math.max(0, lostNow) + recvNow) ?? 0
      : per((raw.packetsLost ?? 0) * 100, (raw.packetsLost ?? 0) + (raw.packetsReceived ?? 0));
  // Over the interval when there is one, else the average since the start.
  const jitterBufferMs =
    per(delta('jitterBufferDelay'), delta('jitterBufferEmittedCount')) ?? per(raw.jitterBufferDelay, raw.jitterBufferEmittedCount);
  const decodeMs = per(delta('totalDecodeTime'), delta('framesDecoded')) ?? per(raw.totalDecodeTime, raw.framesDecoded);
  const rttMs = num(pair?.currentRoundTripTime) !== null ? pair.currentRoundTripTime * 1000 : null;

  return {
    fps,
    kbps,
    rttMs,
    codec: codec?.mimeType ? codec.mimeType.replace(/^video\//i, '') : null,
    localCandidateType: local?.candidateType ?? null,
    remoteCandidateType: remote?.candidateType ?? null,
    protocol: local?.protocol ?? null,
    lossPct,
    jitterBufferMs: jitterBufferMs === null ? null : jitterBufferMs * 1000,
    decodeMs: decodeMs === null ? null : decodeMs * 1000,
    width: num(inbound?.frameWidth),
    height: num(inbound?.frameHeight),
    glassToGlassMs: estimateGlassToGlass({
      rttMs,
      jitterBufferMs: jitterBufferMs === null ? null : jitterBufferMs * 1000,
      decodeMs: decodeMs === null ? null : decodeMs * 1000,
      fps,
    }),
    audio: audioIn ? summarizeAudio(raw, prevRaw, num(audioIn.jitter)) : null,
    raw,
  };
}

/**
 * The VM's sound as the browser receives it: kbit/s and loss over the interval since `prevRaw`
 * (loss since the start without one), and the RTP jitter (RFC 3550, the browser's estimate) in ms.
 */
export function summarizeAudio(raw, prevRaw, jitterSecs) {
  const d = (k) => (prevRaw?.[k] == null || raw[k] == null ? null : raw[k] - prevRaw[k]);
  const secs = d('audioTimestamp') !== null ? d('audioTimestamp') / 1000 : null;
  const bytes = d('audioBytes');
  const kbps = bytes !== null && secs && secs > 0 ? (bytes * 8) / 1000 / secs : null;
  let lost = d('audioLost');
  let got = d('audioPackets');
  if (lost === null || got === null) {
    lost = raw.audioLost ?? 0;
    got = raw.audioPackets ?? 0;
  }
  lost = Math.max(0, lost);
  const lossPct = lost + got > 0 ? (lost * 100) / (lost + got) : 0;
  return { kbps, jitterMs: jitterSecs === null ? null : jitterSecs * 1000, lossPct };
}

/** The overlay's Audio row: "64 kbit/s · jitter 3 ms · loss 0.0 %", or '–' without sound. */
export function formatAudio(a) {
  if (!a) return '–';
  return `${fmt(a.kbps, 0, ' kbit/s')} · jitter ${fmt(a.jitterMs, 0, ' ms')} · loss ${fmt(a.lossPct, 1, ' %')}`;
}

/** The sound button's text and whether it is pressed, for `muted` and `volume` (0-1). */
export function soundButton(muted, volume) {
  if (muted || volume <= 0) return { label: 'unmute', pressed: false, icon: '🔇' };
  return { label: 'mute', pressed: true, icon: volume < 0.5 ? '🔉' : '🔊' };
}

/**
 * An estimate of glass-to-glass latency from what the receiver can see: the network one way
 * (half the round trip), the time frames wait in the jitter buffer, decoding, and one frame
 * interval (capture and display each happen at some point within a frame). It leaves out
 * capture and encode on the VM, so it is a lower bound more than a measurement; null until the
 * parts are known.
 */
export function estimateGlassToGlass({ rttMs, jitterBufferMs, decodeMs, fps }) {
  if (rttMs === null || rttMs === undefined || jitterBufferMs === null || jitterBufferMs === undefined) return null;
  const frame = fps && fps > 0 ? Math.min(1000 / fps, 1000) : 0;
  return rttMs / 2 + jitterBufferMs + (decodeMs ?? 0) + frame;
}

const fmt = (v, digits = 0, unit = '') => (v === null || v === undefined || !Number.isFinite(v) ? '–' : `${v.toFixed(digits)}${unit}`);

/** The overlay's rows: [label, value] pairs, in display order. */
export function formatSummary(s) {
  const kbps = s.kbps === null ? '–' : s.kbps >= 1000 ? `${(s.kbps / 1000).toFixed(2)} Mbit/s` : `${s.kbps.toFixed(0)} kbit/s`;
  const pair = s.localCandidateType || s.remoteCandidateType
    ? `${s.localCandidateType ?? '?'} ⇄ ${s.remoteCandidateType ?? '?'}${s.protocol ? ` (${s.protocol})` : ''}`
    : '–';
  return [
    ['Frames', `${fmt(s.fps, 0, ' fps')}${s.width && s.height ? ` · ${s.width}×${s.height}` : ''}`],
    ['Bitrate', kbps],
    ['Codec', s.codec ?? '–'],
    ['Round trip', fmt(s.rttMs, 0, ' ms')],
    ['Path', pair],
    ['Packet loss', fmt(s.lossPct, 1, ' %')],
    ['Jitter buffer', fmt(s.jitterBufferMs, 0, ' ms')],
    ['Decode', fmt(s.decodeMs, 1, ' ms')],
    ['Audio', formatAudio(s.audio)],
    ['Glass to glass', s.glassToGlassMs === null ? '–' : `≈ ${s.glassToGlassMs.toFixed(0)} ms (estimate)`],
  ];
}

/** Whether a keydown is the overlay's toggle: Ctrl+Alt+S. */
export function isToggleKey(ev) {
  return Boolean(ev.ctrlKey && ev.altKey && !ev.metaKey && (ev.code === 'KeyS' || ev.key === 's' || ev.key === 'S'));
}

/**
 * The overlay: a small panel over `container`, refreshed every REFRESH_MS while shown, reading
 * `viewer.pc` (the current RTCPeerConnection; a new one after a reconnect is picked up).
 */
export class StatsOverlay {
  #viewer;
  #panel;
  #table;
  #timer = null;
  #prev = null;
  #pc = null;

  constructor(viewer, container, doc = globalThis.document) {
    this.#viewer = viewer;
    this.#panel = doc.createElement('aside');
    this.#panel.className = 'stats-overlay';
    this.#panel.hidden = true;
    this.#panel.setAttribute('aria-label', 'Connection statistics');
    const title = doc.createElement('p');
    title.className = 'stats-title';
    title.textContent = 'Stats · Ctrl+Alt+S';
    this.#table = doc.createElement('dl');
    this.#panel.append(title, this.#table);
    container.append(this.#panel);
  }

  get visible() {
    return !this.#panel.hidden;
  }

  toggle() {
    if (this.visible) this.hide();
    else this.show();
  }

  show() {
    this.#panel.hidden = false;
    this.refresh();
    clearInterval(this.#timer);
    this.#timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  hide() {
    this.#panel.hidden = true;
    clearInterval(this.#timer);
    this.#timer = null;
  }

  /** Reads the stats once and redraws. Never throws. */
  async refresh() {
    const pc = this.#viewer.pc;
    if (pc !== this.#pc) {
      this.#pc = pc;
      this.#prev = null;
    }
    let summary;
    try {
      summary = summarize(pc ? await pc.getStats() : [], this.#prev);
    } catch {
      return;
    }
    this.#prev = summary.raw;
    this.lastSummary = summary;
    const doc = this.#panel.ownerDocument;
    const rows = formatSummary(summary).flatMap(([k, v]) => {
      const dt = doc.createElement('dt');
      dt.textContent = k;
      const dd = doc.createElement('dd');
      dd.textContent = v;
      return [dt, dd];
    });
    this.#table.replaceChildren(...rows);
  }
}
