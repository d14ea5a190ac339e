// harness.mjs: helpers for the viewer's end-to-end tests: free ports and X displays, child
// processes that are always stopped (and whose output is kept for failure reports), Xvfb and
// drawing on its root window, Debian's Chromium through playwright-core, and reading pixels and
// frame counts back from the page. No test lives here; it must not start anything on import.

import { spawn, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, unlinkSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const CHROMIUM = process.env.VDESK_CHROMIUM ?? '/usr/bin/chromium';

/** Chromium flags for this machine: root, no GPU, no outside network (see shared/DESIGN.md). */
export const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Whether this is a CI run (CI=true): there a missing prerequisite fails, it never skips. */
export const IN_CI = process.env.CI === 'true' || process.env.CI === '1';

/**
 * The `skip` option of a suite that cannot run on this machine for `reason` (false when it can).
 * Outside CI it prints the reason and returns it; under CI=true it throws, so that the file fails
 * with the reason instead of passing without having run (docs/testing.md, "No skips in CI").
 */
export function skipUnlessCi(file, reason) {
  if (!reason) return false;
  if (IN_CI) throw new Error(`${file}: ${reason}; under CI=true that is a failure, not a skip (docs/testing.md)`);
  console.log(`# ${file}: skipped: ${reason}`);
  return reason;
}

/** Calls `fn` until it returns something truthy (which is returned), or throws after `timeoutMs`
 *  naming `what` and the last value or error seen. */
export async function waitFor(what, fn, { timeoutMs = 10000, intervalMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      const seen = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${seen})`);
    }
    await sleep(intervalMs);
  }
}

/** A TCP port on 127.0.0.1 that nobody listens on right now. */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** An X display number in 90..189 without a lock file or socket. */
export function freeDisplay() {
  for (let i = 0; i < 200; i++) {
    const n = 90 + Math.floor(Math.random() * 100);
    const lock = `/tmp/.X${n}-lock`;
    const socket = `/tmp/.X11-unix/X${n}`;
    if (!existsSync(lock)) {
      if (!existsSync(socket)) return n;
      continue;
    }
    // A lock whose process is gone (an Xvfb that was killed with SIGKILL) is stale: remove it
    // and its socket, so that the socket seen next is the new server's.
    let pid = '';
    try { pid = readFileSync(lock, 'utf8').trim(); } catch { continue; }
    if (pid && existsSync(`/proc/${pid}`)) continue;
    try { unlinkSync(lock); } catch { continue; }
    try { unlinkSync(socket); } catch { /* no socket */ }
    return n;
  }
  throw new Error('no free X display number in 90..189');
}

/**
 * Child processes of one test file. Each keeps the tail of its output for failure reports;
 * stopAll() ends every one of them (SIGTERM, then SIGKILL), by pid.
 */
export class Processes {
  #procs = [];

  /** Starts `cmd args`, with `env` added to this process's environment. `stdin: 'pipe'` keeps
   *  its standard input open (for children that exit at end of input). */
  spawn(name, cmd, args, { env = {}, stdin = 'ignore' } = {}) {
    const child = spawn(cmd, args, {
      env: { ...process.env, ...env },
      stdio: [stdin, 'pipe', 'pipe'],
    });
    const entry = { name, child, lines: [], exited: null };
    const keep = (chunk) => {
      for (const line of chunk.toString().split('\n')) {
        if (!line) continue;
        entry.lines.push(line);
        if (entry.lines.length > 400) entry.lines.shift();
      }
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', (e) => entry.lines.push(`[harness] could not start ${cmd}: ${e.message}`));
    child.on('exit', (code, signal) => {
      entry.exited = { code, signal };
      entry.lines.push(`[harness] ${name} exited: code ${code}, signal ${signal}`);
    });
    this.#procs.push(entry);
    return child;
  }

  /** Throws if `child` has exited, with its output. */
  assertRunning(child) {
    const e = this.#procs.find((p) => p.child === child);
    if (e?.exited) throw new Error(`${e.name} exited early (${JSON.stringify(e.exited)}):\n${e.lines.join('\n')}`);
  }

  /** Sends `signal` to one child and waits (up to 5 s) for it to exit. */
  async kill(child, signal = 'SIGTERM') {
    const e = this.#procs.find((p) => p.child === child);
    if (!e || e.exited) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.kill(signal);
    await Promise.race([gone, sleep(5000)]);
  }

  /** Ends every child still running, newest first. */
  async stopAll() {
    for (const e of [...this.#procs].reverse()) {
      if (e.exited || e.child.exitCode !== null || e.child.pid === undefined) continue;
      const gone = new Promise((r) => e.child.once('exit', r));
      e.child.kill('SIGTERM');
      if (await Promise.race([gone.then(() => true), sleep(3000).then(() => false)])) continue;
      e.child.kill('SIGKILL');
      await Promise.race([gone, sleep(2000)]);
    }
  }

  /** Everything the children printed (their last lines), for a failure report. */
  report() {
    return this.#procs
      .map((e) => `----- ${e.name} (pid ${e.child.pid}) -----\n${e.lines.join('\n')}`)
      .join('\n');
  }
}

// --- X display --------------------------------------------------------------------------------

export const SCREEN = { width: 1280, height: 720 };

/** Starts Xvfb on a free display; resolves to its number once its socket is there. */
export async function startXvfb(procs) {
  const n = freeDisplay();
  const child = procs.spawn(`Xvfb :${n}`, 'Xvfb', [
    `:${n}`,
    '-screen',
    '0',
    `${SCREEN.width}x${SCREEN.height}x24`,
    '-nolisten',
    'tcp',
    // The root background must outlive the short-lived clients that draw it.
    '-noreset',
  ]);
  await waitFor(`Xvfb :${n}`, () => {
    procs.assertRunning(child);
    return existsSync(`/tmp/.X11-unix/X${n}`);
  });
  return n;
}

/**
 * Paints the root window of display `n`: background `bg`, and a `fill` rectangle `rect`
 * ([x0, y0, x1, y1], inclusive). `display -window root` sets the root window's background and
 * exits (it exits with 1 even when it worked, so its status is not trusted: the caller reads the
 * pixel back with readRootPixel).
 */
export async function paintRoot(n, { bg, fill, rect }) {
  const png = path.join(os.tmpdir(), `vdesk-e2e-root-${process.pid}-${n}.png`);
  await run('convert', [
    '-size',
    `${SCREEN.width}x${SCREEN.height}`,
    `xc:${bg}`,
    '-fill',
    fill,
    '-draw',
    `rectangle ${rect.join(',')}`,
    png,
  ]);
  try {
    await run('display', ['-window', 'root', png], { env: { ...process.env, DISPLAY: `:${n}` }, timeout: 10000 });
  } catch (e) {
    if (e.killed || e.code === 'ENOENT') throw e;
  }
  await rm(png, { force: true });
}

/**
 * The [r, g, b] of pixel (x, y) of display `n`'s root window. Reads through a file: ImageMagick
 * reading `xwd:-` from a pipe was seen to return wrong pixels here.
 */
export async function readRootPixel(n, x, y) {
  const file = path.join(os.tmpdir(), `vdesk-e2e-root-${process.pid}-${n}.xwd`);
  try {
    await run('xwd', ['-root', '-silent', '-out', file], { env: { ...process.env, DISPLAY: `:${n}` } });
    const { stdout } = await run('convert', [`xwd:${file}`, '-crop', `1x1+${x}+${y}`, '+repage', 'txt:-']);
    const m = /\((\d+),(\d+),(\d+)/.exec(stdout.split('\n')[1] ?? '');
    if (!m) throw new Error(`cannot read a pixel from: ${stdout}`);
    return [Number(m[1]), Number(m[2]), Number(m[3])];
  } finally {
    await rm(file, { force: true });
  }
}

/** Whether two [r, g, b] differ by at most `tolerance` in every channel. */
export function closeTo(rgb, expected, tolerance = 40) {
  return rgb.length >= 3 && expected.every((v, i) => Math.abs(rgb[i] - v) <= tolerance);
}

/** '#rrggbb' -> [r, g, b]. */
export function hexRgb(hex) {
  const v = Number.parseInt(hex.replace('#', ''), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

// --- HTTP ---------------------------------------------------------------------------------------

/** Waits until `url` answers with a status for which `ok(status, text)` holds. */
export async function waitForHttp(url, { timeoutMs = 15000, ok = (s) => s === 200, check } = {}) {
  return waitFor(
    `${url}`,
    async () => {
      check?.();
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      const text = await res.text();
      return ok(res.status, text) ? { status: res.status, text } : false;
    },
    { timeoutMs, intervalMs: 150 },
  );
}

// --- vdesk-controller with auth -----------------------------------------------------------------

/** Where the Rust binaries are ($VDESK_BIN_DIR, default this checkout's target/debug). */
export const BIN_DIR = process.env.VDESK_BIN_DIR
  ?? path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..', '..', 'target', 'debug');
export const CONTROLLER_BIN = path.join(BIN_DIR, 'vdesk-controller');
export const AGENT_BIN = path.join(BIN_DIR, 'vdesk-agent');

/** The X-side witness of the input tests: `vdesk-xprobe`'s JSON lines (what the X client
 *  received), read as they come. */
export class XProbe {
  events = [];
  constructor(child) {
    this.child = child;
    let buf = '';
    child.stdout.on('data', (chunk) => {
      buf += chunk.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          this.events.push(JSON.parse(line));
        } catch {
          // not ours
        }
      }
    });
  }
  /** Starts `vdesk-xprobe` on display `:n` with its window at `rect` ("x,y,w,h"); resolves once
   *  it is ready. */
  static async start(procs, n, rect) {
    const child = procs.spawn('vdesk-xprobe', path.join(BIN_DIR, 'vdesk-xprobe'), ['--display', `:${n}`, '--rect', rect]);
    const probe = new XProbe(child);
    await waitFor('xprobe ready', () => {
      procs.assertRunning(child);
      return probe.events.some((e) => e.ev === 'ready');
    });
    return probe;
  }
  mark() {
    return this.events.length;
  }
  /** The events since `mark`, of kind `ev` if given. */
  since(mark, ev) {
    return this.events.slice(mark).filter((e) => !ev || e.ev === ev);
  }
  buttons(mark) {
    return this.since(mark, 'button');
  }
  /** The characters typed since `mark`. */
  typed(mark) {
    return this.since(mark, 'key')
      .filter((e) => e.down && e.char !== null)
      .map((e) => e.char)
      .join('');
  }
  /** Keycodes and buttons down now (presses minus releases, over the whole run). */
  held() {
    const keys = new Set();
    const buttons = new Set();
    for (const e of this.events) {
      if (e.ev === 'key') e.down ? keys.add(e.keycode) : keys.delete(e.keycode);
      if (e.ev === 'button') e.down ? buttons.add(e.button) : buttons.delete(e.button);
    }
    return { keys: [...keys], buttons: [...buttons] };
  }
}


/** A fresh controller secret (64 hex digits). */
export function newSecret() {
  return randomBytes(32).toString('hex');
}

/** Runs a `vdesk-controller` subcommand with `secret` and returns what it printed. */
export async function controllerCli(secret, args, bin = CONTROLLER_BIN) {
  const { stdout } = await run(bin, args, { env: { ...process.env, VDESK_SECRET: secret } });
  return stdout.trim();
}

/** The secret VM `vmId`'s agent presents (`vdesk-controller agent-secret`). */
export function agentSecretFor(secret, vmId, bin = CONTROLLER_BIN) {
  return controllerCli(secret, ['agent-secret', '--vm', vmId], bin);
}

/** A viewer token for `vmId` (`vdesk-controller mint-link --token-only`). */
export function mintToken(secret, vmId, { permission = 'control', ttl = '1h', bin = CONTROLLER_BIN } = {}) {
  return controllerCli(secret, ['mint-link', '--vm', vmId, '--permission', permission, '--ttl', ttl, '--token-only'], bin);
}

/**
 * Starts vdesk-controller on a free port with a fresh secret and an admin token, and waits for
 * /healthz. Resolves to a handle: `{base, port, secret, adminToken, child, pageUrl(vmId, opts),
 * token(vmId, opts), agentSecret(vmId), vmInfo(vmId), startAgent(procs, {vmId, display, args,
 * env})}`. `pageUrl` mints a new token (control, 1 h unless `opts` say otherwise) for each page,
 * so tests need not know about auth at all.
 */
export async function startController(procs, { vms = [], args = [], env = {}, bin = CONTROLLER_BIN, agentBin = AGENT_BIN, tls = null, host = '127.0.0.1' } = {}) {
  const port = await freePort();
  // `tls`: {cert, key, sha256} (see makeCertificate): HTTPS and wss://, agents pin the certificate.
  // `host`: the address it listens on (e.g. the host end of a test's veth pair).
  const base = `${tls ? 'https' : 'http'}://${host}:${port}`;
  const secret = newSecret();
  const adminToken = newSecret();
  const child = procs.spawn('vdesk-controller', bin, [
    '--listen', `${host}:${port}`,
    ...(tls ? ['--tls-cert', tls.cert, '--tls-key', tls.key] : []),
    ...vms.flatMap((v) => ['--vm', v]),
    ...args,
  ], { env: { RUST_LOG: process.env.RUST_LOG ?? 'info', VDESK_SECRET: secret, VDESK_ADMIN_TOKEN: adminToken, ...env } });
  await waitForHttp(`${base}/healthz`, { check: () => procs.assertRunning(child) });
  const ctl = {
    base,
    port,
    secret,
    adminToken,
    child,
    token: (vmId, opts = {}) => mintToken(secret, vmId, { ...opts, bin }),
    async pageUrl(vmId, opts = {}) {
      return `${base}/vm/${encodeURIComponent(vmId)}?token=${await ctl.token(vmId, opts)}`;
    },
    agentSecret: (vmId) => agentSecretFor(secret, vmId, bin),
    /** `GET /api/vms/{vmId}` with the admin token: `{status, body}`. */
    async vmInfo(vmId) {
      const res = await fetch(`${base}/api/vms/${encodeURIComponent(vmId)}`, {
        headers: { Authorization: `Bearer ${adminToken}` },
        signal: AbortSignal.timeout(2000),
      });
      return { status: res.status, body: await res.json().catch(() => null) };
    },
    /** Starts vdesk-agent for `vmId` with its derived secret; resolves once the VM is online. */
    async startAgent(agentProcs, { vmId, display, args: agentArgs = [], env: agentEnv = {} }) {
      const agent = agentProcs.spawn(`vdesk-agent ${vmId}`, agentBin, [
        '--controller', base, '--vm-id', vmId, '--display', `:${display}`,
        ...(tls ? ['--cert-sha256', tls.sha256] : []),
        ...agentArgs,
      ], {
        env: {
          RUST_LOG: process.env.RUST_LOG ?? 'info',
          GST_DEBUG: process.env.GST_DEBUG ?? '2',
          VDESK_AGENT_TOKEN: await ctl.agentSecret(vmId),
          ...agentEnv,
        },
      });
      await waitFor(`VM ${vmId} online`, async () => {
        agentProcs.assertRunning(agent);
        const { status, body } = await ctl.vmInfo(vmId);
        return status === 200 && body?.online === true;
      }, { timeoutMs: 15000, intervalMs: 150 });
      return agent;
    },
  };
  return ctl;
}

/**
 * A self-signed certificate for 127.0.0.1 and localhost, made with the openssl command line in a
 * fresh directory: `{dir, cert, key, sha256}` (`sha256`: the fingerprint as openssl prints it).
 */
export async function makeCertificate() {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vdesk-e2e-tls-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  await run('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-subj', '/CN=vdesk-e2e', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
    '-keyout', key, '-out', cert,
  ]);
  const { stdout } = await run('openssl', ['x509', '-noout', '-fingerprint', '-sha256', '-in', cert]);
  return { dir, cert, key, sha256: stdout.trim() };
}

// --- Chromium -----------------------------------------------------------------------------------

/**
 * Launches Debian's Chromium with a fresh profile. Resolves to `{context, newPage, close}`;
 * `close` also removes the profile. `executablePath` replaces CHROMIUM (e.g. a wrapper that runs
 * it in a network namespace).
 */
export async function launchChromium({ executablePath = CHROMIUM, args = [] } = {}) {
  const { chromium } = await import('playwright-core');
  const userDataDir = await mkdtemp(path.join(os.tmpdir(), 'vdesk-e2e-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: [...CHROMIUM_ARGS, ...args],
    viewport: { width: 1280, height: 720 },
  });
  return {
    context,
    newPage: () => context.newPage(),
    async close() {
      await context.close().catch(() => {});
      await rm(userDataDir, { recursive: true, force: true });
    },
  };
}

/** Keeps the console messages and page errors of `page` in `lines` (for failure reports). */
export function recordConsole(page, name = 'page', lines = []) {
  page.on('console', (m) => lines.push(`[${name} ${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => lines.push(`[${name} pageerror] ${e.message}`));
  return lines;
}

/** Runs `fn`; on failure, prints `reports()` (console logs, process output) and rethrows. */
export async function reportingFailures(reports, fn) {
  try {
    return await fn();
  } catch (e) {
    console.error(`\n===== failure report =====\n${reports()}\n===== end of failure report =====`);
    throw e;
  }
}

/** What the test reads from the viewer page: stage, peer connection state, frames decoded. */
export async function viewerState(page) {
  return page.evaluate(async () => {
    const v = window.vdeskViewer;
    const video = document.getElementById('screen');
    if (!v) return { ready: false };
    const stats = await v.videoStats().catch(() => null);
    const quality = video.getVideoPlaybackQuality?.();
    return {
      ready: true,
      stage: v.stage,
      sessionId: v.sessionId,
      connectionState: v.pc?.connectionState ?? null,
      iceConnectionState: v.pc?.iceConnectionState ?? null,
      framesDecoded: Math.max(stats?.framesDecoded ?? 0, quality?.totalVideoFrames ?? 0),
      videoWidth: video.videoWidth,
      videoHeight: video.videoHeight,
      lastError: v.lastError,
    };
  });
}

/**
 * The [r, g, b] the page's <video> shows at (x, y) of the VM's screen (in SCREEN pixels, scaled
 * to the video's own size), read by drawing the current frame to a canvas.
 */
export async function videoPixel(page, x, y) {
  return page.evaluate(
    ({ x, y, screen }) => {
      const video = document.getElementById('screen');
      const w = video.videoWidth;
      const h = video.videoHeight;
      if (!w || !h) return null;
      const canvas = document.createElement('canvas');
      canvas.width = w;
      canvas.height = h;
      const ctx = canvas.getContext('2d', { willReadFrequently: true });
      ctx.drawImage(video, 0, 0, w, h);
      const px = Math.round((x * w) / screen.width);
      const py = Math.round((y * h) / screen.height);
      return Array.from(ctx.getImageData(px, py, 1, 1).data.slice(0, 3));
    },
    { x, y, screen: SCREEN },
  );
}

/** The visible text of the error panel, or '' while it is hidden. */
export async function errorPanelText(page) {
  return page.evaluate(() => {
    const el = document.getElementById('error');
    return el && !el.hidden && el.getClientRects().length ? el.innerText : '';
  });
}

/** Starts recording the viewer's 'error' events in window.__vdeskErrors. */
export async function recordViewerErrors(page) {
  await page.waitForFunction(() => window.vdeskViewer !== undefined);
  await page.evaluate(() => {
    window.__vdeskErrors = [];
    window.vdeskViewer?.addEventListener('error', (e) => window.__vdeskErrors.push(e.detail));
  });
}

/** The viewer errors recorded since recordViewerErrors. */
export async function viewerErrors(page) {
  return page.evaluate(() => window.__vdeskErrors ?? []);
}
