// vdesk.d.ts: TypeScript declarations of vdesk.js (the embeddable viewer) and of the JSON it
// exchanges with the controller. The wire types mirror crates/protocol/src/messages.rs; the unit
// tests check that every example in web/test/fixtures/messages.json (which the Rust tests check
// against the Rust types) fits a declaration here.

// ---------------------------------------------------------------------------------------------
// Wire messages (docs/protocol.md)
// ---------------------------------------------------------------------------------------------

/** 1..=64 of [A-Za-z0-9._-], not starting with '.'. */
export type VmId = string;
/** 32 lowercase hex digits. */
export type SessionId = string;

/** `RTCIceCandidateInit`; an empty `candidate` is end-of-candidates. (Rust: IceCandidate) */
export interface IceCandidate {
  candidate: string;
  sdpMid?: string;
  sdpMLineIndex?: number;
  usernameFragment?: string;
}

/** `RTCIceServer`. (Rust: IceServer) */
export interface IceServer {
  urls: string[];
  username?: string;
  credential?: string;
}

/** `RTCSessionDescriptionInit`; also the 200 reply of `GET .../answer`. */
export interface SessionDescription {
  type: 'offer' | 'answer';
  sdp: string;
}

/** The 202 reply of `GET .../answer` while the VM has not answered. (No Rust type.) */
export interface AnswerPending {
  status: 'pending';
}

export type Side = 'vm' | 'browser';

/** Stable error codes of the controller (Rust: ErrorCode). */
export type ErrorCode =
  | 'bad_request'
  | 'not_found'
  | 'vm_not_found'
  | 'session_not_found'
  | 'agent_offline'
  | 'agent_disconnected'
  | 'unauthorized'
  | 'forbidden'
  | 'payload_too_large'
  | 'conflict'
  | 'too_many_requests'
  | 'agent_error'
  | 'idle_timeout'
  | 'viewer_left'
  | 'shutting_down'
  | 'link_expired'
  | 'connect_timeout'
  | 'internal'
  | 'link_revoked'
  | 'ended_by_admin';

/** Codes the viewer reports on its own, besides the controller's. */
export type ViewerErrorCode =
  | 'timeout'
  | 'ice_failed'
  | 'network'
  | 'bad_response'
  | 'bad_answer'
  | 'webrtc_unsupported'
  | 'bad_vm_id';

/** `GET /api/vms/{vmId}` reply, and an item of `GET /api/vms`. */
export interface VmInfo {
  vmId: VmId;
  online: boolean;
}

/** `GET /api/vms` reply. */
export interface VmList {
  vms: VmInfo[];
}

/** `GET /api/webrtc/config` reply. */
export interface RtcConfig {
  iceServers: IceServer[];
}

/** `POST /api/webrtc/session` body. */
export interface CreateSession {
  vmId: VmId;
  offer: SessionDescription & { type: 'offer' };
}

/** `POST /api/webrtc/session` reply (201). */
/** What a viewer's link allows: view < control < admin. */
export type Permission = 'view' | 'control' | 'admin';
/** Which way the clipboard may travel (per link, enforced by the agent). */
export type ClipboardPolicy = 'both' | 'to-vm' | 'from-vm' | 'off';

/** What the link behind a session grants, as the controller reports it on creation. */
export interface SessionGrant {
  permission: Permission;
  /** Unix milliseconds; absent = never. */
  expiresAt?: number;
  clipboard: ClipboardPolicy;
  /** The viewer's display name from the link. */
  name?: string;
}

export interface SessionCreated {
  sessionId: SessionId;
  vmId: VmId;
  eventsUrl: string;
  /** Absent from older controllers: treat as `{permission: 'view', clipboard: 'both'}`. */
  grant?: SessionGrant;
}

/** `POST /api/webrtc/session/{id}/candidate` body; `candidate: null` is end-of-candidates. */
export interface PostCandidate {
  candidate: IceCandidate | null;
  from: Side;
}

/** `GET /api/webrtc/session/{id}/candidates/{vm|browser}` reply. */
export interface CandidateList {
  candidates: IceCandidate[];
  complete: boolean;
}

/** Every error reply. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string };
}

/** SSE `answer` event data. */
export interface AnswerEvent {
  type: 'answer';
  sdp: string;
}

/** SSE `candidate` event data. */
export interface CandidateEvent {
  type: 'candidate';
  candidate: IceCandidate;
}

/** SSE `peerState` event data: the agent's peer state, e.g. "ice:connected" (for display/logs). */
export interface PeerStateEvent {
  type: 'peerState';
  state: string;
}

/** SSE `ended` event data; the stream closes after it. */
export interface EndedEvent {
  type: 'ended';
  code: ErrorCode;
  reason: string;
}

/** What the controller tells a viewer about its session (SSE `event:` = `type`). */
export type ControllerToViewer = AnswerEvent | CandidateEvent | PeerStateEvent | EndedEvent;

// ---------------------------------------------------------------------------------------------
// Remote control, on the data channels (input.js; Rust: crates/protocol/src/input.rs)
// ---------------------------------------------------------------------------------------------

/** A position in the w×h frame the viewer shows; the agent scales it to the screen. */
export interface FramePoint {
  x: number;
  y: number;
  w: number;
  h: number;
}

/** On the 'pointer' channel (unordered, no retransmits). */
export interface PointerMoveMessage extends FramePoint {
  type: 'pointerMove';
}

/** X button numbers: 1 left, 2 middle, 3 right, 8 back, 9 forward. */
export interface PointerButtonMessage extends FramePoint {
  type: 'pointerButton';
  button: 1 | 2 | 3 | 8 | 9;
  down: boolean;
}

/** Notches: dy > 0 down (X button 5), dy < 0 up (4), dx < 0 left (6), dx > 0 right (7). */
export interface WheelMessage extends FramePoint {
  type: 'wheel';
  dx: number;
  dy: number;
}

/** KeyboardEvent.key and .code. */
export interface KeyMessage {
  type: 'key';
  key: string;
  code: string;
  down: boolean;
}

export interface ReleaseAllMessage {
  type: 'releaseAll';
}

/** Clipboard text in pieces of at most 8 KiB of UTF-8, `more` on all but the last; 1 MiB in all. */
export interface ClipboardMessage {
  type: 'clipboard';
  text: string;
  more?: boolean;
}

export interface ResizeMessage {
  type: 'resize';
  width: number;
  height: number;
}

/** Ask for control (granted at once when nobody holds it; otherwise the holder sees the request). */
export interface RequestControlMessage {
  type: 'requestControl';
}

/** Give up control (it passes to the viewer that asked first), or withdraw a request. */
export interface ReleaseControlMessage {
  type: 'releaseControl';
}

/** Hand control to viewer `to` (an id from `control`); the holder only. */
export interface GiveControlMessage {
  type: 'giveControl';
  to: string;
}

/** Take control from whoever holds it; an admin link only. */
export interface TakeControlMessage {
  type: 'takeControl';
}

/** Viewer -> agent (Rust: ViewerToAgent). */
export type ViewerToAgent =
  | PointerMoveMessage
  | PointerButtonMessage
  | WheelMessage
  | KeyMessage
  | ReleaseAllMessage
  | ClipboardMessage
  | ResizeMessage
  | RequestControlMessage
  | ReleaseControlMessage
  | GiveControlMessage
  | TakeControlMessage;

/** The VM's cursor: straight-alpha RGBA, base64; 0×0 = hidden. */
export interface CursorMessage {
  type: 'cursor';
  width: number;
  height: number;
  xhot: number;
  yhot: number;
  rgba: string;
}

/** Where the VM's pointer is (screen pixels); sent to view-only viewers, which draw the cursor there. */
export interface CursorAtMessage {
  type: 'cursorAt';
  x: number;
  y: number;
}

export interface ScreenSizeMessage {
  type: 'screenSize';
  width: number;
  height: number;
}

/** Something not done, once per kind: 'view_only', 'input_unavailable', 'resize_disabled', ... */
export interface NoticeMessage {
  type: 'notice';
  code: string;
  message: string;
}

/** One viewer of the VM, as every viewer sees it. */
export interface ControlViewer {
  /** The agent's id for the viewer (not its session id). */
  id: string;
  name: string;
  permission: Permission;
  /** Asked for control and waits for it. */
  requested?: boolean;
}

/** Who holds control (null: nobody), who watches, and which one is you; on every change. */
export interface ControlMessage {
  type: 'control';
  holder: string | null;
  you: string;
  viewers: ControlViewer[];
}

/** Agent -> viewer (Rust: AgentToViewer). */
export type AgentToViewer = CursorMessage | CursorAtMessage | ClipboardMessage | ScreenSizeMessage | NoticeMessage | ControlMessage;

// ---------------------------------------------------------------------------------------------
// Stages and errors
// ---------------------------------------------------------------------------------------------

export type Stage =
  | 'idle'
  | 'signalling'
  | 'ice-checking'
  | 'dtls'
  | 'connected'
  | 'streaming'
  | 'failed'
  | 'closed';

/** All stages in order; a stage never moves backwards within one attempt. */
export const STAGES: readonly Stage[];
export const TERMINAL_STAGES: readonly Stage[];
/** Words for a person, e.g. 'ice-checking' -> "Checking network paths (ICE)…". */
export const STAGE_LABELS: Readonly<Record<Stage, string>>;

export interface ErrorInfo {
  code: ErrorCode | ViewerErrorCode | string;
  /** Short, for a person, e.g. "VM agent is offline". */
  message: string;
  /** What may be wrong and what to do. */
  hint: string;
  /** What the server said, when it said something else than `message`; may be ''. */
  detail: string;
}

export interface ViewerErrorDetail extends ErrorInfo {
  /** The stage the attempt had reached when it failed. */
  stage: Stage;
  /** Whether the viewer retries on its own. */
  willRetry: boolean;
  /** In how many ms, when it does. */
  retryInMs: number | null;
}

export const ERROR_TEXTS: Readonly<
  Record<string, { message: string; hint: string; messageNoRetry?: string; retry?: false }>
>;

export class VdeskError extends Error {
  constructor(code: string, detail?: string, options?: { status?: number });
  readonly code: string;
  readonly detail: string;
  /** HTTP status, when the error came from a reply. */
  readonly status?: number;
}

// ---------------------------------------------------------------------------------------------
// Pure helpers (exported for tests and for apps that build their own UI)
// ---------------------------------------------------------------------------------------------

export function stageRank(stage: string): number;
export function nextStage(current: Stage, proposed: Stage | string): Stage;
export function stageForIceConnectionState(state: RTCIceConnectionState | string): Stage | null;
export function stageForConnectionState(state: RTCPeerConnectionState | string): Stage | null;
export function describeError(
  code: string,
  options?: { vmId?: string; stage?: Stage; detail?: string; willRetry?: boolean },
): ErrorInfo;
export function isRetryable(code: string): boolean;
export function retryDelay(failures: number, baseMs?: number, maxMs?: number): number;
export function errorFromResponse(status: number, body: unknown): VdeskError;

export const VIEWER_MESSAGE_TYPES: readonly ControllerToViewer['type'][];
export function isValidVmId(s: unknown): s is VmId;
export function vmIdFromPath(pathname: string): string | null;
/** The `token` query parameter of a page address's search string, or null. */
export function tokenFromSearch(search: string): string | null;
/** `url` with `?token=` (or `&token=`) added; unchanged when `token` is empty. */
export function withToken(url: string, token: string | null | undefined): string;
export function candidateInit(c: unknown): IceCandidate | null;
export function isEndOfCandidates(c: { candidate?: string | null } | null | undefined): boolean;
export function candidateKey(init: IceCandidate): string;
export type ParsedViewerMessage =
  | AnswerEvent
  | (CandidateEvent & { endOfCandidates: boolean })
  | PeerStateEvent
  | { type: 'ended'; code: string; reason: string };
export function parseViewerMessage(data: string | object, eventName?: string): ParsedViewerMessage;
export function parseAnswerPoll(status: number, body: unknown): string | null;
export function parseCandidateList(body: unknown): CandidateList;
export function parseVmInfo(body: unknown): VmInfo;
export function parseRtcConfig(body: unknown): RtcConfig;
export function parseSessionCreated(body: unknown): SessionCreated & { grant: SessionGrant };
export function parseGrant(g: unknown): SessionGrant;
export function createSessionBody(vmId: VmId, offer: { sdp: string }): CreateSession;
export function candidatePostBody(
  c: RTCIceCandidate | IceCandidate | null | undefined,
): PostCandidate & { from: 'browser' };
export function joinUrl(baseUrl: string, path: string): string;
export const api: {
  readonly vm: (vmId: VmId) => string;
  readonly config: () => string;
  readonly sessions: () => string;
  readonly session: (id: SessionId) => string;
  readonly answer: (id: SessionId) => string;
  /** POST a new offer on the session (ICE restart). */
  readonly offer: (id: SessionId) => string;
  readonly candidate: (id: SessionId) => string;
  readonly vmCandidates: (id: SessionId) => string;
  readonly events: (id: SessionId) => string;
};

// ---------------------------------------------------------------------------------------------
// The viewer
// ---------------------------------------------------------------------------------------------

export interface VdeskViewerOptions {
  /** The VM to show. */
  vmId: VmId;
  /** Where the controller is, e.g. "https://vdesk.example.org"; '' = this page's origin. */
  baseUrl?: string;
  /** An attempt that is not streaming after this long fails with 'timeout'. Default 15000. */
  connectTimeoutMs?: number;
  /** Retry after errors (not after vm_not_found and other hopeless ones). Default true. */
  autoRetry?: boolean;
  /** First retry delay; doubles per failure up to 10 s. Default 2000. */
  retryDelayMs?: number;
  /** The viewer token (from the viewer link's `?token=`): sent as `Authorization: Bearer` on
   *  every request, and as `?token=` on the event stream. Default none. */
  token?: string | null;
  /** Where the `[WebRTC] ...` lines go. Default console; null for silence. */
  logger?: Pick<Console, 'log'> & Partial<Pick<Console, 'debug' | 'info' | 'warn' | 'error'>> | null;
  /** 'relay' sends all media through the TURN server(s) of /api/webrtc/config (no direct or
   *  STUN paths): for testing TURN and for networks that only allow it. Default 'all'. */
  iceTransportPolicy?: RTCIceTransportPolicy;
  /** Remote control (input.js): false for a watch-only viewer. Default {}. */
  input?: false | VdeskInputOptions;
  /** Ask for the VM's sound (a recvonly audio m-line; played through the video element, which
   *  stays muted until the page unmutes it). Default true. */
  audio?: boolean;
}

export interface VdeskInputOptions {
  /** 'fit' (scaled into the element, letterboxed) or '1:1' (one VM pixel per CSS pixel). */
  scaling?: 'fit' | '1:1';
  /** Ask the VM to take the element's size (the agent needs --allow-resize). Default false. */
  resize?: boolean;
  /** Carry clipboard text both ways. Default true. */
  clipboard?: boolean;
}

export interface VdeskInputEventMap {
  cursor: CustomEvent<{ width: number; height: number; xhot: number; yhot: number; css: string }>;
  clipboard: CustomEvent<{ text: string }>;
  screensize: CustomEvent<{ width: number; height: number }>;
  notice: CustomEvent<{ code: string; message: string }>;
  /** Who holds control and who watches (also in `control`). */
  control: CustomEvent<ControlMessage>;
}

/** Remote control of one viewer (`viewer.input`). */
/** Whether a grant lets the viewer send input (control or admin). */
export function mayControl(grant: SessionGrant | null | undefined): boolean;
/** Whether the browser's clipboard may go to the VM (control, and direction both or to-vm). */
export function clipboardToVm(grant: SessionGrant | null | undefined): boolean;
/** Whether the VM's clipboard is taken in (direction both or from-vm). */
export function clipboardFromVm(grant: SessionGrant | null | undefined): boolean;
/** The VM's clipboard pieces put back together, at most `max` (1 MiB) bytes of UTF-8. */
export class ClipboardAssembler {
  constructor(max?: number);
  push(piece: string, more: boolean): null | { text: string } | { overflow: true };
}

export class VdeskInput extends EventTarget {
  readonly scaling: 'fit' | '1:1';
  /** Keys and buttons held now. */
  readonly held: number;
  /** The VM's clipboard text, once it sent one. */
  remoteClipboard: string | null;
  /** The VM's screen size, once the agent said. */
  screenSize: { width: number; height: number } | null;
  /** Where the VM's pointer is (`cursorAt`, sent to view-only viewers), or null. */
  cursorAt: { x: number; y: number } | null;
  setScaling(mode: 'fit' | '1:1'): void;
  setResize(on: boolean): void;
  /** True until the session's grant allows control; a view-only viewer sends nothing. */
  readonly viewOnly: boolean;
  /** The session's grant (VdeskViewer calls this when the session is created). */
  setGrant(grant: SessionGrant | null): void;
  /** Sends text to the VM's CLIPBOARD (also done on paste). False if over 1 MiB, or if the grant
   *  does not allow browser -> VM. */
  sendClipboard(text: string): boolean;
  /** Releases every key and button held (done on blur, hidden page, channel close). */
  releaseAll(): void;
  /** The agent's last word on who holds control, or null before it spoke. */
  readonly control: ControlMessage | null;
  /** Whether this viewer holds control (its input reaches the VM). */
  readonly inControl: boolean;
  /** Asks for control; false if the channel is not open. */
  requestControl(): boolean;
  /** Gives up control (or withdraws a request). */
  releaseControl(): boolean;
  /** Hands control to viewer `id` (the holder only). */
  giveControl(id: string): boolean;
  /** Takes control (an admin link only). */
  takeControl(): boolean;
  addEventListener<K extends keyof VdeskInputEventMap>(
    type: K,
    listener: (this: VdeskInput, ev: VdeskInputEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
}

export interface VdeskViewerEventMap {
  stage: CustomEvent<{ stage: Stage }>;
  /** The VM's sound arrived (its track is added to the video element's stream). */
  audio: CustomEvent<{ track: MediaStreamTrack }>;
  error: CustomEvent<ViewerErrorDetail>;
  retrying: CustomEvent<{ attempt: number; delayMs: number }>;
  firstframe: CustomEvent<{ msSinceConnect: number }>;
  peerstate: CustomEvent<{ state: string }>;
  /** The network path broke after media flowed; an ICE restart is under way. */
  icerestart: CustomEvent<{ attempt: number; iceConnectionState: RTCIceConnectionState }>;
  /** The event stream to the controller was lost (false) or is back (true); the video kept
   *  playing meanwhile. */
  signalling: CustomEvent<{ connected: boolean }>;
  /** The session was created: what its link grants (view only unless `control`/`admin`). */
  grant: CustomEvent<{ grant: SessionGrant }>;
}

export class VdeskViewer extends EventTarget {
  constructor(videoElement: HTMLVideoElement, options: VdeskViewerOptions);
  /** The current stage. */
  readonly stage: Stage;
  /** The current attempt's peer connection, or null. */
  readonly pc: RTCPeerConnection | null;
  /** The current attempt's session id, once the controller has given one. */
  readonly sessionId: SessionId | null;
  readonly vmId: VmId;
  /** The 'input' data channel of the current attempt (for remote control), or null. */
  readonly inputChannel: RTCDataChannel | null;
  /** Remote control, or null when made with `input: false`. */
  readonly input: VdeskInput | null;
  /** The current session's grant, or null before the first session is created. */
  readonly grant: SessionGrant | null;
  /** The last error reported since the last first frame, or null. */
  readonly lastError: ErrorInfo | null;
  /** Attempts started so far. */
  readonly attempts: number;
  /** The inbound video RTP stats (framesDecoded, framesPerSecond, ...), or null. */
  videoStats(): Promise<RTCInboundRtpStreamStats | null>;
  /** Starts a new attempt; true once the first frame is decoded, false if it failed or was
   *  closed. Never rejects. */
  connect(): Promise<boolean>;
  /** Ends the session (DELETE with keepalive) and stays closed until connect()/retry(). */
  close(): void;
  /** connect() now, skipping a pending back-off. */
  retry(): Promise<boolean>;

  addEventListener<K extends keyof VdeskViewerEventMap>(
    type: K,
    listener: (this: VdeskViewer, ev: VdeskViewerEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof VdeskViewerEventMap>(
    type: K,
    listener: (this: VdeskViewer, ev: VdeskViewerEventMap[K]) => unknown,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

// ---- The WebSocket fallback (wsplayer.js, re-exported here; docs/viewer.md) ----

/** The page's transport: `?transport=ws` | `?transport=webrtc` | default `auto`. */
export type Transport = 'auto' | 'ws' | 'webrtc';
/** "UDP blocked: streaming over the controller connection". */
export const FALLBACK_NOTICE: string;
export function chooseTransport(search: string | null | undefined): Transport;
/** Whether an `auto` page should give up on WebRTC now (ICE failed, or no path for 3 s). */
export function shouldFallBack(o: {
  transport: Transport;
  errorCode?: string | null;
  checkingSinceMs?: number | null;
  nowMs?: number;
  connected?: boolean;
  /** WebCodecs' VideoDecoder exists on this page (false: never fall back). Default true. */
  canDecode?: boolean;
}): boolean;
/** `ws(s)://host/api/vms/{vmId}/stream?token=...` for the page at `pageUrl`. */
export function streamUrl(pageUrl: string, vmId: string, token?: string | null): string;
/** One binary frame of the stream (docs/protocol.md "WebSocket media"), or null if malformed. */
export function parseFrame(buffer: ArrayBuffer): null | {
  keyframe: boolean;
  /** The WebCodecs codec string. */
  codec: string;
  ptsUs: number;
  captureUs: number;
  data: Uint8Array;
};
export interface WsPlayerStats {
  transport: 'websocket';
  frames: number;
  decoded: number;
  /** Dropped in the browser (decoder behind, waiting for a keyframe). */
  dropped: number;
  /** Arrival to paint, ms (smoothed). */
  decodeMs: number;
  /** Frames waiting at the controller for this viewer. */
  queue: number;
  /** Frames the controller skipped for this viewer. */
  serverDropped: number;
  bytes: number;
  width: number;
  height: number;
}
/** Plays `/api/vms/{vmId}/stream` on a canvas (WebCodecs) and sends input from it.
 *  Events: `state` ({state}), `welcome` ({grant, sessionId}), `message` (AgentToViewer),
 *  `ended` ({code, reason}). */
export class WsPlayer extends EventTarget {
  constructor(canvas: HTMLCanvasElement, options: { vmId: string; token?: string | null; pageUrl?: string });
  readonly stats: WsPlayerStats;
  connect(): void;
  close(): void;
  /** Sends one ViewerToAgent message. */
  send(msg: object): void;
}
/** Runs the page's transport choice for `viewer` (see docs/viewer.md). */
export function startTransport(o: {
  viewer: VdeskViewer;
  video: HTMLVideoElement;
  vmId: string;
  token?: string | null;
  transport: Transport;
  onStreaming?: () => void;
  onEnded?: (detail: { code: string; reason: string }) => void;
}): { player(): WsPlayer | null };
