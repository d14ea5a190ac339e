//! What the agent's parts share for the life of one agent, built once by `main` and passed down
//! (as an `Arc`, through the `MediaHub`): the encoder each codec uses, the `/metrics` registry
//! and the stage times. Nothing here is process-wide, so two agents in one process (tests) keep
//! their encoder choices, metrics and stage times apart.

use std::sync::Arc;

use crate::encoder::{Choice, EncoderChoices};
use crate::metrics::Registry;
use crate::stage_timing::StageTimes;

/// One agent's shared state.
#[derive(Debug, Default)]
pub struct AgentContext {
    /// Which encoder each codec uses (made once at start-up, changed when hardware fails).
    pub encoders: EncoderChoices,
    /// What the agent's `/metrics` shows: its sessions, its media, its stage times.
    pub metrics: Registry,
}

impl AgentContext {
    /// A context whose codecs use `choices` (logged, one line per codec; software for a codec
    /// without a choice).
    pub fn new(choices: Vec<Choice>) -> Arc<Self> {
        Arc::new(AgentContext {
            encoders: EncoderChoices::new(choices),
            metrics: Registry::default(),
        })
    }

    /// The agent's stage times (the same ones its `/metrics` shows).
    pub fn stage_times(&self) -> &Arc<StageTimes> {
        self.metrics.stage_times()
    }
}
