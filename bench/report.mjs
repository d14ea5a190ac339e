// report.mjs: turns the raw samples of a glass-to-glass run (bench/results/latest.json, written by
// bench/latency.mjs) into the published tables. Every figure is computed here from the raw
// samples, so `node bench/report.mjs bench/results/latest.json` recomputes bench/results/latest.md
// (and the tables of docs/benchmarks.md) from the JSON kept in the repository.

import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Nearest-rank percentile over the sorted `xs` (a miss is +Infinity and sorts last). */
export function pct(xs, p) {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * (s.length - 1) + 0.5))];
}

const median = (xs) => pct(xs.filter(Number.isFinite), 0.5);

/** A row's latencies in ms, one per attempt: from the clock read before the paint request
 *  (`from = 'before'`, the published figure) or after the X server confirmed it ('after', the
 *  old definition). A sample not seen within the window is +Infinity: it counts in the
 *  percentiles as slower than every sample seen. */
export function latencies(r, from = 'before') {
  return (r.samples ?? []).map((s) => (s.missed ? Infinity : s.shown - s[from]));
}

const f = (x, d = 0) => (x === Infinity ? 'miss' : Number.isFinite(x) ? x.toFixed(d) : '–');
const screen = (r) => `${r.width}x${r.height}`;
const label = (r) => (r.system === 'vdesk' ? `vdesk ${r.codec}${r.variant && r.variant !== 'default' ? ` (${r.variant})` : ''}` : `x11vnc ${r.variant}`);
const linkName = (r) => (r.link ? `${r.link.rate_kbps / 1000} Mbit/s, ${2 * r.link.delay_ms} ms RTT` : 'loopback');

/** Rates over the quiet window before the samples. */
export function rates(r) {
  const w = r.rates;
  if (!w) return {};
  return {
    contentFps: w.contentFrames == null ? NaN : w.contentFrames / w.secs,
    decodedFps: w.framesDecoded == null ? NaN : w.framesDecoded / w.secs,
    serverCpu: (100 * w.serverCpuS) / w.secs,
    browserCpu: (100 * w.browserCpuS) / w.secs,
    kbps: (w.bytes * 8) / 1000 / w.secs,
  };
}

function summary(r) {
  const l = latencies(r);
  return {
    p50: pct(l, 0.5), p95: pct(l, 0.95), max: pct(l, 1), n: l.length,
    misses: l.filter((x) => x === Infinity).length,
    p50After: pct(latencies(r, 'after'), 0.5),
    ...rates(r),
  };
}

const load = (r) => (r.load ? `${r.load.before[0].toFixed(1)} → ${r.load.after[0].toFixed(1)}` : '–');

export function rowsTable(results) {
  const out = ['| # | system | screen | content | link | p50 ms | p95 ms | max ms | p50 from XSync ms | attempts | missed (> 2 s) | content frames/s | decoded frames/s | server CPU % | browser CPU % | kbit/s | load 1 min |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |'];
  for (const r of results) {
    if (r.error) { out.push(`| ${r.seq} | ${label(r)} | ${screen(r)} | ${r.content} | ${linkName(r)} | error: ${r.error.split('\n')[0]} |`); continue; }
    const s = summary(r);
    out.push(`| ${r.seq} | ${label(r)} | ${screen(r)} | ${r.content} | ${linkName(r)} | ${f(s.p50)} | ${f(s.p95)} | ${f(s.max)} | ${f(s.p50After)} | ${s.n} | ${s.misses} | ${f(s.contentFps)} | ${f(s.decodedFps)} | ${f(s.serverCpu)} | ${f(s.browserCpu)} | ${f(s.kbps)} | ${load(r)} |`);
  }
  return out.join('\n');
}

/** Samples of the rows matching `pred`, pooled (e.g. the A/B/A/B repetitions of one system). */
function pooled(results, pred) {
  const rows = results.filter((r) => !r.error && pred(r));
  const l = rows.flatMap((r) => latencies(r));
  const cf = rows.map((r) => rates(r).contentFps).filter(Number.isFinite);
  return { rows, p50: pct(l, 0.5), p95: pct(l, 0.95), n: l.length, misses: l.filter((x) => x === Infinity).length, contentFps: cf.length ? cf.reduce((a, b) => a + b) / cf.length : NaN };
}

/** vdesk against the VNC rows of the same screen, content and link, samples pooled over the
 *  interleaved repetitions. */
export function comparisonTable(results, group) {
  const out = ['| screen | content | link | vdesk p50 / p95 ms | VNC p50 / p95 ms | p50 ratio | p95 ratio | vdesk content frames/s | VNC content frames/s | attempts (missed) vdesk / VNC |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |'];
  const keys = new Map();
  for (const r of results.filter((x) => x.group === group && !x.error)) keys.set(`${screen(r)}|${r.content}|${linkName(r)}`, r);
  for (const [, k] of keys) {
    const same = (r) => r.group === group && screen(r) === screen(k) && r.content === k.content && linkName(r) === linkName(k);
    const v = pooled(results, (r) => same(r) && r.system === 'vdesk');
    const n = pooled(results, (r) => same(r) && r.system === 'vnc');
    if (!v.n || !n.n) continue;
    out.push(`| ${screen(k)} | ${k.content} | ${linkName(k)} | ${f(v.p50)} / ${f(v.p95)} | ${f(n.p50)} / ${f(n.p95)} | ${f(v.p50 / n.p50, 2)} | ${f(v.p95 / n.p95, 2)} | ${f(v.contentFps)} | ${f(n.contentFps)} | ${v.n} (${v.misses}) / ${n.n} (${n.misses}) |`);
  }
  return out.join('\n');
}

/** The x11vnc variant with the lowest p50 (then p95) over the sweep rows. */
export function bestVnc(results) {
  const rows = results.filter((r) => r.group === 'sweep' && r.system === 'vnc' && !r.error);
  const byVariant = new Map();
  for (const r of rows) byVariant.set(r.variant, [...(byVariant.get(r.variant) ?? []), r]);
  let best = null;
  for (const [variant, rs] of byVariant) {
    const p = pooled(rs, () => true);
    if (!best || p.p50 < best.p50 || (p.p50 === best.p50 && p.p95 < best.p95)) best = { variant, ...p, settings: rs[0].settings };
  }
  return best;
}

export function sweepTable(results) {
  const out = ['| x11vnc variant | x11vnc flags | noVNC quality / compression | p50 ms | p95 ms | attempts (missed) | content frames/s | server CPU % | kbit/s |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |'];
  const seen = new Set();
  for (const r of results.filter((x) => x.group === 'sweep' && x.system === 'vnc')) {
    if (seen.has(r.variant)) continue;
    seen.add(r.variant);
    if (r.error) { out.push(`| ${r.variant} | error: ${r.error.split('\n')[0]} |`); continue; }
    const rs = results.filter((x) => x.group === 'sweep' && x.variant === r.variant && !x.error);
    const p = pooled(rs, () => true);
    const avg = (k) => rs.map((x) => rates(x)[k]).reduce((a, b) => a + b, 0) / rs.length;
    out.push(`| ${r.variant} | \`${r.settings.vncArgs.join(' ') || '(defaults)'}\` | ${r.settings.quality ?? 6} / ${r.settings.compression ?? 2} | ${f(p.p50)} | ${f(p.p95)} | ${p.n} (${p.misses}) | ${f(p.contentFps)} | ${f(avg('serverCpu'))} | ${f(avg('kbps'))} |`);
  }
  return out.join('\n');
}

/** Per-sample stages: request → X confirmed, X confirmed → last packet received (capture wait,
 *  capture, encode, send), received → presented (jitter buffer, decode), presented → shown. */
function stages(s) {
  const st = { request: s.after - s.before };
  if (s.received != null && s.presented != null) {
    st.toReceived = s.received - s.after;
    st.toPresented = s.presented - s.received;
    st.toShown = s.shown - s.presented;
  } else st.afterToShown = s.shown - s.after;
  return st;
}

/** The median's stages next to those of the slowest 10% of samples. */
export function tailTable(results, pred = () => true) {
  const out = ['| system | screen | content | link | samples | total ms | paint request → X confirmed | X confirmed → last packet received | received → presented (jitter buffer, decode) | presented → shown | X confirmed → shown (VNC) |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |'];
  for (const r of results.filter((x) => !x.error && pred(x))) {
    const seen = r.samples.filter((s) => !s.missed).map((s) => ({ total: s.shown - s.before, ...stages(s) }));
    if (!seen.length) continue;
    const sorted = [...seen].sort((a, b) => a.total - b.total);
    const tail = sorted.slice(Math.floor(sorted.length * 0.9));
    const mid = sorted.slice(Math.floor(sorted.length * 0.4), Math.ceil(sorted.length * 0.6));
    for (const [name, set] of [['middle 20% (around p50)', mid], [`slowest 10% (${tail.length})`, tail]]) {
      const m = (k) => median(set.map((x) => x[k]));
      out.push(`| ${label(r)} #${r.seq} | ${screen(r)} | ${r.content} | ${linkName(r)} | ${name} | ${f(m('total'), 1)} | ${f(m('request'), 1)} | ${f(m('toReceived'), 1)} | ${f(m('toPresented'), 1)} | ${f(m('toShown'), 1)} | ${f(m('afterToShown'), 1)} |`);
    }
  }
  return out.join('\n');
}

/** The agent variants of the "suspects" group against the default rows interleaved with them. */
export function suspectsTable(results) {
  const out = ['| agent variant | settings | p50 ms | p95 ms | attempts (missed) | content frames/s | agent capture ms (avg) | agent convert + encode ms (avg) | X confirmed → last packet received (p50) | agent CPU % | kbit/s |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |'];
  const seen = new Set();
  for (const r of results.filter((x) => x.group === 'suspects')) {
    if (seen.has(r.variant)) continue;
    seen.add(r.variant);
    if (r.error) { out.push(`| ${r.variant} | error: ${r.error.split('\n')[0]} |`); continue; }
    const rs = results.filter((x) => x.group === 'suspects' && x.variant === r.variant && !x.error);
    const p = pooled(rs, () => true);
    const avg = (fn) => { const v = rs.map(fn).filter(Number.isFinite); return v.length ? v.reduce((a, b) => a + b) / v.length : NaN; };
    const toRecv = median(rs.flatMap((x) => x.samples.filter((s) => !s.missed && s.received != null).map((s) => s.received - s.after)));
    const settings = [...r.settings.agentArgs, ...Object.entries(r.settings.agentEnv).map(([k, v]) => `${k}=${v}`)].join(' ') || '(defaults)';
    out.push(`| ${r.variant} (${rs.length} rows) | \`${settings}\` | ${f(p.p50)} | ${f(p.p95)} | ${p.n} (${p.misses}) | ${f(p.contentFps)} | ${f(avg((x) => x.stages?.captureMs), 1)} | ${f(avg((x) => x.stages?.encodeMs), 1)} | ${f(toRecv, 1)} | ${f(avg((x) => rates(x).serverCpu))} | ${f(avg((x) => rates(x).kbps))} |`);
  }
  return out.join('\n');
}

export function clickTable(results) {
  const out = ['| # | system | screen | content | link | input-to-photon p50 ms | p95 ms | of which browser → X (p50) ms | attempts (missed) |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |'];
  for (const r of results.filter((x) => !x.error && x.clicks?.length)) {
    const total = r.clicks.map((c) => (c.missed ? Infinity : c.shown - c.down));
    const leg = r.clicks.filter((c) => !c.missed).map((c) => c.received - c.down);
    out.push(`| ${r.seq} | ${label(r)} | ${screen(r)} | ${r.content} | ${linkName(r)} | ${f(pct(total, 0.5))} | ${f(pct(total, 0.95))} | ${f(pct(leg, 0.5), 1)} | ${total.length} (${total.filter((x) => x === Infinity).length}) |`);
  }
  return out.join('\n');
}

/** The whole report, in the order of bench/results/latest.md. */
export function report({ header, results }) {
  const parts = [header, ''];
  const groups = new Set(results.map((r) => r.group));
  if (groups.has('sweep')) {
    const best = bestVnc(results);
    parts.push('### x11vnc + noVNC sweep (heavy content, 1280x720)', '', sweepTable(results), '',
      `Best (lowest p50, then p95): **${best?.variant ?? 'none'}**; the comparison below uses it.`, '');
  }
  for (const [g, title] of [['main', 'vdesk against the best x11vnc, interleaved (A/B/A/B), samples pooled over the repetitions'], ['link', 'On a 10 Mbit/s, 20 ms RTT link (linkemu.py), interleaved']]) {
    if (groups.has(g)) parts.push(`### ${title}`, '', comparisonTable(results, g), '');
  }
  if (groups.has('suspects')) parts.push('### Where the time goes on heavy content: agent variants, interleaved with the defaults (1280x720 heavy)', '', suspectsTable(results), '');
  parts.push('### The median against the slowest 10% of samples (stages, medians within each set)', '',
    tailTable(results, (r) => r.group !== 'sweep' && r.group !== 'suspects'), '');
  parts.push('### Every row (in the order run)', '', rowsTable(results), '');
  parts.push('### Input to photon (a click on the block until the frame that shows it repainted)', '', clickTable(results), '');
  return parts.join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const file = process.argv[2] ?? path.join(path.dirname(fileURLToPath(import.meta.url)), 'results', 'latest.json');
  console.log(report(JSON.parse(await readFile(file, 'utf8'))));
}
