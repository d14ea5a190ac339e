// report.test.mjs: the benchmark's report (bench/report.mjs): misses count in the percentiles,
// the figure counts from the clock read before the paint request, the best x11vnc variant is
// picked from the sweep, and the published bench/results/latest.md is exactly what the raw
// samples in bench/results/latest.json give. Run: node --test bench/report.test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { latencies, pct, bestVnc, report, tailTable } from './report.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const sample = (before, after, shown) => ({ before, after, shown });

test('a missed sample counts as slower than every sample seen', () => {
  const r = { samples: [sample(0, 1, 10), sample(0, 1, 20), { before: 0, after: 1, missed: true }] };
  assert.deepEqual(latencies(r), [10, 20, Infinity]);
  assert.equal(pct(latencies(r), 0.5), 20);
  assert.equal(pct(latencies(r), 0.95), Infinity);
});

test('latency counts from the clock read before the paint request', () => {
  const r = { samples: [sample(100, 104, 130)] };
  assert.deepEqual(latencies(r), [30]);
  assert.deepEqual(latencies(r, 'after'), [26]);
});

test('the best x11vnc variant is the lowest p50 of the sweep', () => {
  const row = (variant, shown) => ({ group: 'sweep', system: 'vnc', variant, settings: { vncArgs: [] }, samples: shown.map((s) => sample(0, 1, s)) });
  const best = bestVnc([row('default', [40, 50, 60]), row('fast', [15, 20, 90]), row('slow', [30, 31, 32])]);
  assert.equal(best.variant, 'fast');
});

test('the slowest 10% are broken down next to the median', () => {
  const samples = Array.from({ length: 20 }, (_, i) => ({ before: 0, after: 1, received: 2 + i, presented: 3 + i, shown: 4 + i }));
  const t = tailTable([{ system: 'vdesk', codec: 'h264', seq: 1, width: 1280, height: 720, content: 'heavy', samples }]);
  assert.match(t, /slowest 10% \(2\) \| 23\.0 \| 1\.0 \| 20\.0 \| 1\.0 \| 1\.0/);
});

test('bench/results/latest.md is recomputed exactly from latest.json', async () => {
  const data = JSON.parse(await readFile(path.join(here, 'results', 'latest.json'), 'utf8'));
  const md = await readFile(path.join(here, 'results', 'latest.md'), 'utf8');
  assert.ok(data.results.length > 0 && data.results.every((r) => r.error || r.samples.length > 0));
  assert.equal(`${report(data)}\n`, md);
});

test('a row that failed is reported with its error, not dropped', () => {
  const md = report({ header: 'h', results: [{ seq: 1, group: 'main', system: 'vdesk', codec: 'h264', width: 1280, height: 720, content: 'heavy', samples: [], clicks: [], error: 'agent exited\nlog' }] });
  assert.match(md, /\| 1 \| vdesk h264 \| 1280x720 \| heavy \| loopback \| error: agent exited \|/);
});
