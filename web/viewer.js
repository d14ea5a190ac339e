// viewer.js: the script of the /vm/{vmId} page. It takes the VM id from the address, runs a
// VdeskViewer on <video id="screen">, and turns its events into the loading overlay, the error
// panel and the control bar (who holds control, who watches: `controlView` in input.js). All
// WebRTC and signalling lives in vdesk.js; nothing here talks to the network.

import {
  VdeskViewer,
  STAGE_LABELS,
  STAGES,
  describeError,
  addressWithoutToken,
  isValidVmId,
  mayControl,
  takePageToken,
  tokenStorageKey,
  vmIdFromPath,
} from './vdesk.js';
import { StatsOverlay, isToggleKey, soundButton } from './stats.js';
import { chooseTransport, startTransport } from './wsplayer.js';
import { controlView } from './input.js';

const $ = (id) => document.getElementById(id);
const video = $('screen');
const loading = $('loading');
const errorPanel = $('error');
const stageText = $('stage-text');
const countdown = $('retry-countdown');
const retryButton = $('retry-now');

const vmId = vmIdFromPath(location.pathname);
document.title = vmId ? `vdesk — ${vmId}` : 'vdesk';
for (const el of document.querySelectorAll('.vm-id')) el.textContent = vmId ?? '';

/** Renders `controlView` into `root` (a status line, the viewers, the buttons), hidden when quiet. */
class ControlBar {
  #root;
  #input;

  constructor(root, input) {
    this.#root = root;
    this.#input = input;
    input.addEventListener('control', (ev) => this.render(ev.detail));
  }

  render(msg) {
    const view = controlView(msg);
    const root = this.#root;
    if (!view || view.quiet) {
      root.hidden = true;
      return;
    }
    root.hidden = false;
    root.classList.toggle('mine', view.mine);
    const doc = root.ownerDocument;
    root.replaceChildren();
    const status = doc.createElement('p');
    status.className = 'control-status';
    status.textContent = view.status;
    const list = doc.createElement('ul');
    list.className = 'control-viewers';
    for (const v of view.viewers) {
      const li = doc.createElement('li');
      li.textContent = v.text;
      list.append(li);
    }
    const buttons = doc.createElement('div');
    buttons.className = 'control-actions';
    for (const a of view.actions) {
      const b = doc.createElement('button');
      b.type = 'button';
      b.textContent = a.label;
      b.dataset.action = a.kind;
      b.addEventListener('click', () => {
        if (a.kind === 'request') this.#input.requestControl();
        else if (a.kind === 'release') this.#input.releaseControl();
        else if (a.kind === 'give') this.#input.giveControl(a.to);
        else if (a.kind === 'take') this.#input.takeControl();
      });
      buttons.append(b);
    }
    root.append(status, list, buttons);
  }
}

let countdownTimer = null;

function stopCountdown() {
  clearInterval(countdownTimer);
  countdownTimer = null;
}

function show(el) {
  el.hidden = false;
  el.classList.remove('fading');
}

function fadeOut(el) {
  if (el.hidden) return;
  el.classList.add('fading');
  setTimeout(() => {
    if (el.classList.contains('fading')) el.hidden = true;
  }, 260);
}

function showStage(stage) {
  stageText.textContent = STAGE_LABELS[stage] ?? stage;
  const rank = STAGES.indexOf(stage);
  for (const li of loading.querySelectorAll('.steps li')) {
    const r = STAGES.indexOf(li.dataset.step);
    li.classList.toggle('done', r < rank);
    li.classList.toggle('active', r === rank);
  }
}

function showError({ code, message, hint, detail, willRetry }) {
  $('error-message').textContent = message;
  $('error-hint').textContent = hint;
  $('error-detail').textContent = detail ?? '';
  $('error-detail').hidden = !detail;
  $('error-code').textContent = code;
  retryButton.textContent = willRetry ? 'Retry now' : 'Retry';
  // Without a (valid) link, trying again cannot help: the panel says to ask for a new one.
  retryButton.hidden = code === 'unauthorized' || code === 'forbidden';
  countdown.textContent = '';
  stopCountdown();
  loading.hidden = true;
  show(errorPanel);
}

function startCountdown(delayMs) {
  stopCountdown();
  const until = Date.now() + delayMs;
  const tick = () => {
    const s = Math.max(0, Math.ceil((until - Date.now()) / 1000));
    countdown.textContent = `retrying in ${s}s`;
    if (s === 0) stopCountdown();
  };
  tick();
  countdownTimer = setInterval(tick, 250);
}

if (!isValidVmId(vmId)) {
  showError({ ...describeError('bad_vm_id', { vmId: vmId ?? '', willRetry: false }), willRetry: false });
  document.querySelector('#error .actions').hidden = true;
  window.vdeskViewer = null;
} else {
  // ?scale=1:1 shows one VM pixel per CSS pixel (default: fit); ?resize=1 asks the VM to take
  // the window's size (the agent needs --allow-resize); ?relay=1 forces every media packet
  // through the TURN server (a test and diagnosis knob).
  const params = new URLSearchParams(location.search);
  // The viewer link's token (`?token=...`) goes with every request of the viewer. It leaves the
  // address bar at once (history.replaceState: not in the history, a bookmark or a copied
  // address) and stays in memory, and in this tab's sessionStorage so that a reload still works.
  let storage = null;
  try {
    storage = window.sessionStorage;
  } catch {
    // Storage disabled: memory only.
  }
  const token = takePageToken(location.search, storage, tokenStorageKey(vmId));
  if (new URLSearchParams(location.search).has('token')) {
    history.replaceState(history.state, '', addressWithoutToken(location.href));
  }
  const viewer = new VdeskViewer(video, {
    vmId,
    token,
    input: { scaling: params.get('scale') === '1:1' ? '1:1' : 'fit', resize: params.get('resize') === '1' },
    iceTransportPolicy: params.get('relay') === '1' ? 'relay' : 'all',
  });
  window.vdeskViewer = viewer;
  // Who holds control, who watches, and the request / release / give / take buttons.
  if (viewer.input) new ControlBar($('control-bar'), viewer.input);

  viewer.addEventListener('stage', ({ detail: { stage } }) => {
    if (stage === 'streaming') {
      stopCountdown();
      fadeOut(loading);
      fadeOut(errorPanel);
    } else if (stage === 'signalling' || stage === 'ice-checking' || stage === 'dtls' || stage === 'connected') {
      if (!errorPanel.hidden) {
        // A retry is under way: keep the last error up, say what is happening.
        stopCountdown();
        countdown.textContent = `reconnecting: ${(STAGE_LABELS[stage] ?? stage).replace(/…$/, '')}…`;
      } else {
        showStage(stage);
        show(loading);
      }
    }
  });
  // The stats overlay: Ctrl+Alt+S (kept from the VM) or the button.
  const stats = new StatsOverlay(viewer, document.querySelector('.screen-area'));
  window.vdeskStats = stats;
  const statsButton = $('stats-toggle');
  statsButton?.addEventListener('click', () => stats.toggle());
  let swallowKeyUp = null;
  window.addEventListener('keydown', (ev) => {
    if (!isToggleKey(ev)) return;
    ev.preventDefault();
    ev.stopImmediatePropagation();
    swallowKeyUp = ev.code;
    stats.toggle();
  }, { capture: true });
  window.addEventListener('keyup', (ev) => {
    if (swallowKeyUp === null || ev.code !== swallowKeyUp) return;
    ev.preventDefault();
    ev.stopImmediatePropagation();
    swallowKeyUp = null;
  }, { capture: true });

  // Sound: the video element plays it, muted until a click (browsers' autoplay policy).
  const screen = $('screen');
  const soundToggle = $('sound-toggle');
  const volume = $('volume');
  const showSound = () => {
    const b = soundButton(screen.muted, screen.volume);
    soundToggle.textContent = `${b.icon} ${b.label}`;
    soundToggle.setAttribute('aria-pressed', String(b.pressed));
  };
  viewer.addEventListener('audio', () => {
    $('sound').hidden = false;
    showSound();
  });
  soundToggle.addEventListener('click', () => {
    screen.muted = !screen.muted;
    if (!screen.muted && screen.volume === 0) screen.volume = volume.valueAsNumber = 1;
    screen.play?.()?.catch?.(() => {});
    showSound();
  });
  volume.addEventListener('input', () => {
    screen.volume = volume.valueAsNumber;
    if (screen.volume > 0) screen.muted = false;
    showSound();
  });

  // A view-only link: say so (the viewer sends no keys, mouse or clipboard).
  viewer.addEventListener('grant', ({ detail: { grant } }) => {
    $('view-only').hidden = mayControl(grant);
  });
  viewer.addEventListener('error', ({ detail }) => showError(detail));
  viewer.addEventListener('retrying', ({ detail: { delayMs } }) => startCountdown(delayMs));
  let transport = null;
  retryButton.addEventListener('click', () => {
    stopCountdown();
    countdown.textContent = 'reconnecting…';
    // On the WebSocket stream: a fresh connection of it; else a fresh WebRTC attempt.
    const player = transport?.player();
    if (player) player.connect();
    else viewer.retry();
  });

  showStage('signalling');
  // ?transport=ws streams over the controller's WebSocket at once; ?transport=webrtc never does;
  // by default the page falls back to it by itself when ICE fails (wsplayer.js).
  transport = startTransport({
    viewer, video, vmId, token, transport: chooseTransport(location.search),
    onStreaming: () => { stopCountdown(); fadeOut(loading); fadeOut(errorPanel); },
    // The WebSocket stream ended: its reason, and the countdown to the fresh attempt.
    onEnded: ({ code, reason, willRetry, retryInMs }) => {
      const shown = code === 'vm_offline' ? 'agent_offline' : code ?? 'network';
      showError({ ...describeError(shown, { vmId, detail: reason ?? '', willRetry }), willRetry });
      if (willRetry) startCountdown(retryInMs);
    },
  });
}
