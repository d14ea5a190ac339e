// demo.e2e.mjs: scripts/demo.sh as a user runs it. While it runs, no process on the machine has
// the controller's secret or the viewer token in its arguments, and its output shows no secret but
// the viewer link; killed with SIGTERM (or SIGHUP, its terminal closing) it stops everything it
// started: no Xvfb, controller, agent or desktop program of it is left.
//
// Run: node --test --test-concurrency=1 web/test/e2e/demo.e2e.mjs (builds the debug binaries).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const skip = process.env.VDESK_E2E === '0' ? 'VDESK_E2E=0' : false;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

/** Every process now: pid -> {ppid, start (clock ticks since boot), cmdline}. */
function processes() {
  const out = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // The command name is in parentheses and may hold spaces: fields count from after it.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const cmdline = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').join(' ').trim();
      out.set(Number(name), { ppid: Number(fields[1]), state: fields[0], start: fields[19], cmdline });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** `root` and every process below it. */
function tree(root) {
  const all = processes();
  const found = new Map();
  const todo = [root];
  while (todo.length) {
    const p = todo.pop();
    const info = all.get(p);
    if (!info || found.has(p)) continue;
    found.set(p, info);
    for (const [pid, i] of all) if (i.ppid === p) todo.push(pid);
  }
  return found;
}

/** Whether process `pid` (started at `start`) still runs (a zombie does not count). */
function alive(pid, start) {
  const now = processes().get(pid);
  return !!now && now.start === start && now.state !== 'Z';
}

async function runDemoAndStop(signal) {
  const secret = randomBytes(32).toString('hex');
  const port = await freePort();
  const env = {
    ...process.env,
    VDESK_PROFILE: 'debug',
    VDESK_LISTEN: `127.0.0.1:${port}`,
    VDESK_DEMO_DISPLAY: String(300 + Math.floor(Math.random() * 200)),
    VDESK_SECRET: secret,
    VDESK_SKIP_NPM: '1',
  };
  // Its own process group, as a job in a terminal; the signal goes to the script only.
  const demo = spawn('bash', [path.join(ROOT, 'scripts/demo.sh')], { cwd: ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  demo.stdout.on('data', (d) => (output += d));
  demo.stderr.on('data', (d) => (output += d));
  const exited = new Promise((r) => demo.on('exit', (code, sig) => r({ code, sig })));
  try {
    const deadline = Date.now() + 300_000;
    let link = null;
    while (!link) {
      link = /vdesk demo is running\. Open: (\S+)/.exec(output)?.[1] ?? null;
      if (demo.exitCode !== null) assert.fail(`demo.sh exited early:\n${output}`);
      if (Date.now() > deadline) assert.fail(`demo.sh did not come up:\n${output}`);
      await sleep(200);
    }
    const token = new URL(link).searchParams.get('token');
    assert.ok(token && token.length > 20, link);

    const started = tree(demo.pid);
    const names = [...started.values()].map((p) => p.cmdline);
    for (const want of ['Xvfb', 'vdesk-controller', 'vdesk-agent', 'openbox']) {
      assert.ok(names.some((c) => c.includes(want)), `${want} among ${names.join('\n')}`);
    }
    // No process's arguments carry a secret (ps shows them to every local user).
    for (const [pid, p] of processes()) {
      assert.ok(!p.cmdline.includes(secret), `pid ${pid} has the controller secret in its arguments: ${p.cmdline}`);
      assert.ok(!p.cmdline.includes(token), `pid ${pid} has the viewer token in its arguments: ${p.cmdline}`);
    }
    // The output shows the link (it must) and no other secret.
    assert.ok(!output.includes(secret), "demo.sh printed the controller secret");
    assert.equal(output.split(token).length - 1, 1, 'the token is printed once, in the link');

    process.kill(demo.pid, signal);
    const { code, sig } = await Promise.race([exited, sleep(30_000).then(() => ({ code: 'timeout' }))]);
    assert.notEqual(code, 'timeout', `demo.sh did not stop on ${signal}`);
    assert.ok(code !== 0 || sig, `demo.sh exited with ${code}`);
    // Everything it started is gone (the output prefixers end with their program).
    let left = [];
    for (let i = 0; i < 50; i++) {
      left = [...started].filter(([pid, p]) => pid !== demo.pid && alive(pid, p.start));
      if (!left.length) break;
      await sleep(100);
    }
    assert.deepEqual(left.map(([pid, p]) => `${pid} ${p.cmdline}`), [], `left running after ${signal}`);
    assert.match(output, /==> stopping/);
  } catch (e) {
    console.error(output);
    throw e;
  } finally {
    if (demo.exitCode === null && demo.signalCode === null) {
      try {
        process.kill(-demo.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

describe('scripts/demo.sh', { skip }, () => {
  it('keeps secrets out of process arguments and stops everything on SIGTERM', { timeout: 360_000 }, () => runDemoAndStop('SIGTERM'));
  it('stops everything when its terminal closes (SIGHUP)', { timeout: 360_000 }, () => runDemoAndStop('SIGHUP'));
});
