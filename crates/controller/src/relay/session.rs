//! One signalling session as the relay keeps it: offer, answer, the ordered event log the viewer
//! replays, every candidate of each side in order with one poll cursor per side, and the viewer's
//! activity for the idle timeout. Pure data and bookkeeping: no sockets, no clocks, no logging.

use std::time::Instant;

use vdesk_protocol::{
    CandidateList, ControllerToViewer, IceCandidate, SessionDescription, SessionGrant,
    SessionStats, Side, VmId,
};

use super::ConnId;

/// Most candidates one side may send in a session (a browser gathers a few dozen at most).
pub const MAX_CANDIDATES_PER_SIDE: usize = 256;
/// Most bytes of candidate text (`candidate`, `sdpMid`, `usernameFragment`) one side may send
/// in a session: a few dozen real candidates take a few KiB.
pub const MAX_CANDIDATE_BYTES_PER_SIDE: usize = 64 * 1024;
/// Most `peerState` events kept per session; later ones are dropped, they are informational.
pub const MAX_PEER_STATES: usize = 256;

/// Candidates of one side, in arrival order, with the cursor of `GET .../candidates/{side}`.
#[derive(Debug, Default)]
pub(crate) struct CandidateQueue {
    pub all: Vec<IceCandidate>,
    /// How many of `all` the poll route has already returned.
    pub polled: usize,
    /// Bytes of text in `all` (see [`MAX_CANDIDATE_BYTES_PER_SIDE`]).
    pub bytes: usize,
}

impl CandidateQueue {
    pub fn complete(&self) -> bool {
        self.all.iter().any(IceCandidate::is_end_of_candidates)
    }
}

#[derive(Debug)]
pub(crate) struct Session {
    pub vm: VmId,
    /// The agent connection that streams this session; `None` while its agent's link is down
    /// (since `detached_at`), waiting for the agent to come back and `resume` it.
    pub agent: Option<ConnId>,
    pub detached_at: Option<Instant>,
    /// The viewer's latest offer.
    pub offer: SessionDescription,
    /// The agent's latest answer.
    pub answer: Option<String>,
    /// A new offer (ICE restart) went to the agent; its answer replaces `answer`.
    pub renegotiating: bool,
    /// How many of the viewer's candidates went to the agent (the rest go on `resume`).
    pub browser_sent: usize,
    /// Everything told to the viewer, in order; event `n` has SSE id `n + 1`.
    pub log: Vec<ControllerToViewer>,
    pub browser: CandidateQueue,
    pub vm_side: CandidateQueue,
    pub peer_states: usize,
    /// Open event streams of the viewer; while any is open the session is not idle.
    pub open_streams: u32,
    /// Last request of the viewer (or close of its last event stream).
    pub last_seen: Instant,
    /// What the viewer's link grants, as offered to the agent (or echoed in its `resume`): the
    /// owner tag (only a token with that tag may use the session), permission, expiry...
    pub grant: SessionGrant,
    /// Until when the peer may take to report `connected` (`None` once it has, and for adopted
    /// sessions, which were streaming before the controller restarted).
    pub connect_by: Option<Instant>,
    /// When the viewer's link expires (from `grant.expires_at`): the session ends then.
    pub expires: Option<Instant>,
    /// The agent's last `sessionStats`, for `/metrics`.
    pub stats: Option<SessionStats>,
    /// The id of the viewer link that created it here (not known for adopted sessions).
    pub link_id: Option<String>,
}

impl Session {
    pub fn new(vm: VmId, agent: ConnId, offer: SessionDescription, now: Instant) -> Self {
        Self {
            vm,
            agent: Some(agent),
            detached_at: None,
            offer,
            answer: None,
            renegotiating: false,
            browser_sent: 0,
            log: Vec::new(),
            browser: CandidateQueue::default(),
            vm_side: CandidateQueue::default(),
            peer_states: 0,
            open_streams: 0,
            last_seen: now,
            grant: SessionGrant::default(),
            expires: None,
            connect_by: None,
            stats: None,
            link_id: None,
        }
    }

    pub fn queue(&mut self, side: Side) -> &mut CandidateQueue {
        match side {
            Side::Browser => &mut self.browser,
            Side::Vm => &mut self.vm_side,
        }
    }

    /// Appends to the viewer's log and returns the event's sequence number (SSE `id`).
    pub fn push_event(&mut self, event: ControllerToViewer) -> u64 {
        self.log.push(event);
        self.log.len() as u64
    }

    /// Events with a sequence number above `after`, for a new event stream.
    pub fn events_after(&self, after: u64) -> Vec<(u64, ControllerToViewer)> {
        let skip = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(self.log.len());
        self.log[skip..]
            .iter()
            .enumerate()
            .map(|(i, e)| ((skip + i + 1) as u64, e.clone()))
            .collect()
    }

    /// The candidates of `side` that the poll route has not returned yet. The VM's candidates are
    /// held back until the answer exists, so that a viewer never gets one it cannot add yet.
    pub fn poll(&mut self, side: Side) -> CandidateList {
        if side == Side::Vm && self.answer.is_none() {
            return CandidateList {
                candidates: Vec::new(),
                complete: false,
            };
        }
        let q = self.queue(side);
        let candidates = q.all[q.polled..].to_vec();
        q.polled = q.all.len();
        CandidateList {
            candidates,
            complete: q.complete(),
        }
    }

    pub fn is_idle(&self, now: Instant, timeout: std::time::Duration) -> bool {
        self.open_streams == 0 && now.saturating_duration_since(self.last_seen) >= timeout
    }
}
