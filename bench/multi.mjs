// multi.mjs: the many-viewers benchmark (issue 12). One agent at 1280x720 with a 60 fps busy
// region (vdesk-xpaint, as in latency.mjs), and N viewers (peer connections) as pages of one
// headless Chromium, for each N of --viewers (default 1,2,5,10). For each N: the agent's CPU from
// /proc/PID/stat over a quiet window, each viewer's frames/s, and each viewer's glass-to-glass
// p50/p95 (xpaint repaints a block and stamps the time after XSync; every page's
// requestVideoFrameCallback probe finds the first displayed frame showing the new colour, as in
// latency.mjs). With --slow-at N, one more run with N viewers, the last in a second Chromium in
// a network namespace behind linkemu.py capped at --slow-kbps (1000). Raw samples go to
// bench/results/multi.json, the table to bench/results/multi.md.
// Run it through bench/run.sh --viewers 1,2,5,10 (own network namespace, release build).

import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const require = (await import('node:module')).createRequire(path.join(root, 'web', 'package.json'));
const { chromium } = require('playwright-core');

const { values: opt } = parseArgs({
  options: {
    viewers: { type: 'string', default: '1,2,5,10' },
    samples: { type: 'string', default: '30' },
    codec: { type: 'string', default: 'h264' },
    'bin-dir': { type: 'string', default: path.join(root, 'target', 'release') },
    out: { type: 'string', default: path.join(here, 'results') },
    window: { type: 'string', default: '5' }, // seconds of the CPU / frame-rate window
    // One more run with this many viewers, the last behind a --slow-kbps link (linkemu.py in a
    // network namespace of its own, as in web/test/e2e/badnet.e2e.mjs).
    'slow-at': { type: 'string', default: '' },
    'slow-kbps': { type: 'string', default: '1000' },
  },
});
const COUNTS = opt.viewers.split(',').map(Number).filter((n) => n > 0);
const SAMPLES = Number(opt.samples);
const BIN = opt['bin-dir'];
const WINDOW_S = Number(opt.window);
const W = 1280;
const H = 720;
const BLOCK = { x: 100, y: 100, w: 160, h: 160 };
const COLOURS = ['ff0000', '00ff00', '0000ff', 'ffff00', 'ff00ff', '00ffff'];
const CHROMIUM_ARGS = [
  '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--autoplay-policy=no-user-gesture-required', '--disable-renderer-backgrounding',
  '--disable-background-timer-throttling', '--disable-backgrounding-occluded-windows',
];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const run = promisify(execFile);
const LINKEMU = path.join(root, 'web', 'test', 'e2e', 'linkemu.py');
const NS = `vdesk-multi-${process.pid % 100000}`;
const HOST_IP = '10.232.0.1';
const NS_IP = '10.232.0.2';

/** A network namespace for the slow viewer's Chromium, joined to this one by linkemu.py capped
 *  at `kbps` both ways (150 ms queue). Returns {wrapper, link, stop()}. */
async function slowLink(procs, kbps) {
  await run('ip', ['netns', 'del', NS]).catch(() => {});
  await run('ip', ['netns', 'add', NS]);
  const [a, b] = [`vmh${process.pid % 100000}`, `vmn${process.pid % 100000}`];
  const link = procs.spawn('linkemu', 'python3', [LINKEMU, a, b]);
  await waitFor('linkemu.py ready', () => link.log.join('').includes('ready'));
  const inNs = (...args) => run('ip', ['netns', 'exec', NS, ...args]);
  await run('ip', ['link', 'set', b, 'netns', NS]);
  await run('ip', ['addr', 'add', `${HOST_IP}/30`, 'dev', a]);
  await run('ip', ['link', 'set', a, 'up']);
  await inNs('ip', 'addr', 'add', `${NS_IP}/30`, 'dev', b);
  await inNs('ip', 'link', 'set', b, 'up');
  await inNs('ip', 'link', 'set', 'lo', 'up');
  link.stdin.write(`${JSON.stringify({ delay_ms: 0, loss: 0, rate_kbps: kbps, queue_ms: 150 })}\n`);
  const wrapper = path.join(os.tmpdir(), `vdesk-chromium-${NS}.sh`);
  await writeFile(wrapper, `#!/bin/sh\nexec ip netns exec ${NS} /usr/bin/chromium "$@"\n`);
  await chmod(wrapper, 0o755);
  return { wrapper, stop: async () => { await run('ip', ['netns', 'del', NS]).catch(() => {}); await rm(wrapper, { force: true }); } };
}

class Procs {
  list = [];
  spawn(name, cmd, args, env = {}) {
    const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    p.name = name;
    p.log = [];
    const keep = (d) => { p.log.push(d.toString()); if (p.log.length > 200) p.log.shift(); };
    p.stdout.on('data', keep);
    p.stderr.on('data', keep);
    this.list.push(p);
    return p;
  }
  async stopAll() {
    for (const p of this.list.reverse()) if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM');
    await sleep(300);
    for (const p of this.list) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    this.list = [];
  }
}

async function waitFor(what, fn, timeoutMs = 20000) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try { const v = await fn(); if (v) return v; } catch (e) { last = e; }
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

function freeDisplay() {
  for (let n = 220; n < 300; n++) if (!existsSync(`/tmp/.X11-unix/X${n}`) && !existsSync(`/tmp/.X${n}-lock`)) return n;
  throw new Error('no free X display');
}
let nextPort = 19000 + (process.pid % 1000) * 10;
const port = () => nextPort++;

/** CPU seconds (user+system) used so far by `pid`. */
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}
const loadAvg = () => os.loadavg().map((x) => x.toFixed(2)).join(' ');

function stats(xs) {
  if (!xs.length) return { p50: NaN, p95: NaN, n: 0 };
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * (s.length - 1) + 0.5))];
  return { p50: q(0.5), p95: q(0.95), n: s.length };
}
const rgbOf = (hex) => [0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16));
const close = (a, b, tol = 60) => a.every((v, i) => Math.abs(v - b[i]) <= tol);

const VIDEO_PROBE = ({ bx, by }) => {
  const v = document.querySelector('video');
  const c = new OffscreenCanvas(1, 1);
  const ctx = c.getContext('2d', { willReadFrequently: true });
  window.__frames = [];
  const onFrame = (now, md) => {
    ctx.drawImage(v, (bx * v.videoWidth) / 1280, (by * v.videoHeight) / 720, 1, 1, 0, 0, 1, 1);
    const d = ctx.getImageData(0, 0, 1, 1).data;
    window.__frames.push([performance.timeOrigin + Math.max(now, md.expectedDisplayTime ?? now), d[0], d[1], d[2]]);
    v.requestVideoFrameCallback(onFrame);
  };
  v.requestVideoFrameCallback(onFrame);
};

async function clockOffset(page) {
  let best = null;
  for (let i = 0; i < 5; i++) {
    const t0 = Date.now();
    const p = await page.evaluate(() => performance.timeOrigin + performance.now());
    const t1 = Date.now();
    if (!best || t1 - t0 < best.rtt) best = { rtt: t1 - t0, offset: p - (t0 + t1) / 2 };
  }
  return best.offset;
}

async function startStimulus(procs, display) {
  const args = ['--display', `:${display}`, '--rect', `${BLOCK.x},${BLOCK.y},${BLOCK.w},${BLOCK.h}`, '--color', COLOURS[0],
    '--background', '202020', '--busy', `${Math.round(W / 3)},${Math.round(H / 3)},${W / 2},${H / 2}`, '--busy-fps', '60'];
  const p = procs.spawn('xpaint', path.join(BIN, 'vdesk-xpaint'), args);
  const lines = createInterface({ input: p.stdout });
  const waiting = [];
  lines.on('line', (l) => { if (!l.startsWith('clicked')) waiting.shift()?.(l); });
  const next = () => new Promise((r) => waiting.push(r));
  const ready = await Promise.race([next(), sleep(5000).then(() => null)]);
  if (!ready?.startsWith('ready')) throw new Error(`xpaint did not start: ${p.log.join('')}`);
  return {
    async paint(colour) {
      const reply = next();
      p.stdin.write(`${colour}\n`);
      const m = /^painted (\w+) (\d+)/.exec(await reply);
      if (!m) throw new Error('xpaint did not paint');
      return Number(m[2]) / 1000;
    },
  };
}

async function mint(env, permission) {
  return new Promise((resolve, reject) => {
    const m = spawn(path.join(BIN, 'vdesk-controller'),
      ['mint-link', '--vm', 'bench', '--permission', permission, '--ttl', '1h', '--token-only'], { env: { ...process.env, ...env } });
    let out = '';
    m.stdout.on('data', (d) => { out += d; });
    m.on('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`mint-link exited ${code}`))));
  });
}

async function runOne(n, slowKbps = 0) {
  const procs = new Procs();
  let browser;
  let slowBrowser;
  let slow;
  try {
    slow = slowKbps ? await slowLink(procs, slowKbps) : null;
    const host = slow ? HOST_IP : '127.0.0.1';
    const display = freeDisplay();
    procs.spawn('Xvfb', 'Xvfb', [`:${display}`, '-screen', '0', `${W}x${H}x24`, '-nolisten', 'tcp', '-noreset']);
    await waitFor('Xvfb', () => existsSync(`/tmp/.X11-unix/X${display}`));
    const stim = await startStimulus(procs, display);
    const p = port();
    const env = { VDESK_SECRET: 'bench-secret-0123456789abcdef0123456789', VDESK_ADMIN_TOKEN: 'bench-admin-0123456789abcdef0123' };
    const base = `http://${host}:${p}`;
    procs.spawn('controller', path.join(BIN, 'vdesk-controller'), ['--listen', `${host}:${p}`, '--vm', 'bench', '--max-sessions-per-token', '20', '--max-sessions-per-vm', '20'], { ...env, RUST_LOG: 'warn' });
    await waitFor('controller', async () => (await fetch(`${base}/healthz`)).ok);
    const metrics = port();
    const agentSecret = await new Promise((resolve, reject) => {
      const m = spawn(path.join(BIN, 'vdesk-controller'), ['agent-secret', '--vm', 'bench'], { env: { ...process.env, ...env } });
      let out = '';
      m.stdout.on('data', (d) => { out += d; });
      m.on('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`agent-secret exited ${code}`))));
    });
    const agent = procs.spawn('agent', path.join(BIN, 'vdesk-agent'),
      ['--controller', base, '--vm-id', 'bench', '--display', `:${display}`, '--codecs', opt.codec, '--max-sessions', String(n + 2),
        '--metrics-listen', `127.0.0.1:${metrics}`], { VDESK_AGENT_TOKEN: agentSecret, VDESK_LOG: 'warn' });
    const admin = { headers: { Authorization: `Bearer ${env.VDESK_ADMIN_TOKEN}` } };
    await waitFor('agent online', async () => (await (await fetch(`${base}/api/vms/bench`, admin)).json()).online);
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS, headless: true });
    const pages = [];
    for (let i = 0; i < n; i++) {
      // A context (a window) per viewer: a background tab's frames would be throttled.
      let b = browser;
      if (slow && i === n - 1) {
        // The last viewer: its own Chromium, in the namespace behind the capped link.
        slowBrowser = await chromium.launch({ executablePath: slow.wrapper, args: CHROMIUM_ARGS, headless: true });
        b = slowBrowser;
      }
      const page = await (await b.newContext({ viewport: { width: 640, height: 400 } })).newPage();
      // The first viewer holds control; the others watch (view-only links share the encoder too).
      await page.goto(`${base}/vm/bench?token=${await mint(env, i === 0 ? 'control' : 'view')}`);
      pages.push(page);
    }
    for (const [i, page] of pages.entries()) {
      await waitFor(`viewer ${i} first frame`, () => page.evaluate(async () => ((await window.vdeskViewer?.videoStats?.())?.framesDecoded ?? 0) > 0), 30000);
      await page.evaluate(VIDEO_PROBE, { bx: BLOCK.x + BLOCK.w / 2, by: BLOCK.y + BLOCK.h / 2 });
    }
    await sleep(2000);
    const metricsText = await (await fetch(`http://127.0.0.1:${metrics}/metrics`)).text();
    const encoders = Number(/^vdesk_agent_encoders (\S+)$/m.exec(metricsText)?.[1]);

    // CPU and frame rates over a quiet window.
    const frames = () => Promise.all(pages.map((pg) => pg.evaluate(async () => (await window.vdeskViewer.videoStats())?.framesDecoded ?? 0)));
    const f0 = await frames();
    const c0 = cpuSeconds(agent.pid);
    const t0 = Date.now();
    const load0 = loadAvg();
    await sleep(WINDOW_S * 1000);
    const secs = (Date.now() - t0) / 1000;
    const agentCpu = (100 * (cpuSeconds(agent.pid) - c0)) / secs;
    const f1 = await frames();
    const fps = f1.map((f, i) => (f - f0[i]) / secs);

    // Glass to glass, every viewer on the same paints.
    const offsets = await Promise.all(pages.map(clockOffset));
    const samples = pages.map(() => []);
    const misses = pages.map(() => 0);
    for (let s = 1; s <= SAMPLES; s++) {
      const colour = COLOURS[s % COLOURS.length];
      await sleep(150 + Math.random() * 250);
      await Promise.all(pages.map((pg) => pg.evaluate(() => { window.__frames.length = 0; })));
      const painted = await stim.paint(colour);
      const want = rgbOf(colour);
      await Promise.all(pages.map(async (pg, i) => {
        const end = Date.now() + 2000;
        while (Date.now() < end) {
          await sleep(30);
          const fr = await pg.evaluate(() => window.__frames.slice());
          const seen = fr.find((f) => f[0] - offsets[i] >= painted - 1 && close(f.slice(1, 4), want));
          if (seen) { samples[i].push(seen[0] - offsets[i] - painted); return; }
        }
        misses[i]++;
      }));
    }
    const viewers = samples.map((lat, i) => ({ viewer: i, ...stats(lat), misses: misses[i], fps: fps[i], samples: lat }));
    return { viewers: n, slowKbps, codec: opt.codec, encoders, agentCpu, windowS: secs, loadBefore: load0, loadAfter: loadAvg(), perViewer: viewers };
  } catch (e) {
    return { viewers: n, error: `${e.message}\n${procs.list.map((p) => `[${p.name}] ${p.log.join('').slice(-1500)}`).join('\n')}` };
  } finally {
    await browser?.close().catch(() => {});
    await slowBrowser?.close().catch(() => {});
    await procs.stopAll();
    await slow?.stop();
  }
}

const f = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '–');
const results = [];
for (const n of COUNTS) {
  process.stderr.write(`bench multi: ${n} viewer(s) ... `);
  const r = await runOne(n);
  results.push(r);
  process.stderr.write(r.error ? `error: ${r.error.split('\n')[0]}\n` : `agent CPU ${f(r.agentCpu)}%, encoders ${r.encoders}\n`);
}
if (opt['slow-at']) {
  const n = Number(opt['slow-at']);
  process.stderr.write(`bench multi: ${n} viewer(s), the last behind ${opt['slow-kbps']} kbit/s ... `);
  const r = await runOne(n, Number(opt['slow-kbps']));
  results.push(r);
  process.stderr.write(r.error ? `error: ${r.error.split('\n')[0]}\n` : `agent CPU ${f(r.agentCpu)}%, encoders ${r.encoders}\n`);
}
const one = results.find((r) => r.viewers === 1 && !r.error);
const rows = ['| viewers | encoders | agent CPU % (× one viewer) | p50 ms per viewer: median (min–max) | p50 − one viewer\'s, worst ms | p95 ms per viewer: median (max) | frames/s per viewer: min–max | misses | load average (1, 5, 15 min) |',
  '| --- | --- | --- | --- | --- | --- | --- | --- | --- |'];
for (let r of results) {
  if (r.error) { rows.push(`| ${r.viewers} | error: ${r.error.split('\n')[0]} |`); continue; }
  const p50s = r.perViewer.map((v) => v.p50);
  const p95s = r.perViewer.map((v) => v.p95);
  const fpss = r.perViewer.map((v) => v.fps);
  const med = (xs) => stats(xs).p50;
  const worse = one ? Math.max(...p50s) - one.perViewer[0].p50 : NaN;
  const label = r.slowKbps ? `${r.viewers} (the last at ${r.slowKbps} kbit/s: p50 ${f(r.perViewer.at(-1).p50)} ms, ${f(r.perViewer.at(-1).fps)} frames/s; others below)` : `${r.viewers}`;
  if (r.slowKbps) r = { ...r, perViewer: r.perViewer.slice(0, -1) };
  rows.push(`| ${label} | ${r.encoders} | ${f(r.agentCpu)} (${one ? f(r.agentCpu / one.agentCpu, 2) : '–'}) | ${f(med(p50s))} (${f(Math.min(...p50s))}–${f(Math.max(...p50s))}) | ${f(worse)} | ${f(med(p95s))} (${f(Math.max(...p95s))}) | ${f(Math.min(...fpss))}–${f(Math.max(...fpss))} | ${r.perViewer.reduce((a, v) => a + v.misses, 0)} | ${r.loadBefore} → ${r.loadAfter} |`);
}
const header = `Run ${new Date().toISOString()} on ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${opt.codec}, 1280x720 busy (60 fps region), ` +
  `${SAMPLES} samples per viewer, CPU over ${WINDOW_S} s; binaries ${BIN}; command: bench/run.sh ${process.argv.slice(2).join(' ')}`;
const md = `${header}\n\n${rows.join('\n')}\n`;
await mkdir(opt.out, { recursive: true });
await writeFile(path.join(opt.out, 'multi.md'), md);
await writeFile(path.join(opt.out, 'multi.json'), JSON.stringify({ header, results }, null, 2));
console.log(md);
if (results.some((r) => r.error)) process.exitCode = 1;
