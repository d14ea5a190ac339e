// Unit tests of the control bar's logic (controlView in web/input.js): what the control bar shows and offers for each `control` message.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { controlView } from '../input.js';

const fixtures = JSON.parse(readFileSync(new URL('./fixtures/messages.json', import.meta.url), 'utf8'));
const example = fixtures.messages.find((m) => m.name === 'agentControl').json;

describe('control bar', () => {
  it('shows who holds control and lets a control viewer ask for it', () => {
    const v = controlView(example); // you are bob (2), alice (1) holds control, bob asked
    assert.equal(v.status, 'alice has control');
    assert.equal(v.mine, false);
    assert.deepEqual(v.actions.map((a) => a.kind), ['release'], 'bob already asked: he may cancel');
    assert.equal(v.viewers[0].text, 'bob (you) · asks for control');
    assert.equal(v.viewers[1].text, 'alice · in control');
    assert.equal(v.viewers[2].text, 'viewer 3 · view only');
    const fresh = controlView({ ...example, viewers: example.viewers.map((x) => ({ ...x, requested: undefined })) });
    assert.deepEqual(fresh.actions.map((a) => a.kind), ['request']);
  });
  it('offers the holder release and give to whoever asked', () => {
    const v = controlView({ ...example, you: '1' });
    assert.equal(v.status, 'You have control');
    assert.equal(v.quiet, false);
    assert.equal(controlView({ ...example, you: '1', viewers: [example.viewers[0]] }).quiet, true, 'alone in control');
    assert.deepEqual(v.actions, [
      { kind: 'release', label: 'Release control' },
      { kind: 'give', label: 'Give to bob', to: '2' },
    ]);
  });
  it('offers an admin take, and a view-only viewer nothing', () => {
    const admin = { ...example, you: '4', viewers: [...example.viewers, { id: '4', name: 'root', permission: 'admin' }] };
    assert.deepEqual(controlView(admin).actions.map((a) => a.kind), ['request', 'take']);
    assert.deepEqual(controlView({ ...example, you: '3' }).actions, []);
    const nobody = fixtures.messages.find((m) => m.name === 'agentControlNobody').json;
    assert.equal(controlView(nobody).status, 'Nobody has control');
    assert.equal(controlView(null), null);
  });
});
