//! vdesk agent library: runs inside a VM, connects out to the controller, and answers each
//! viewer's offer with a real WebRTC peer (GStreamer `webrtcbin`) streaming the X display.

pub mod capture;
pub mod codec;
pub mod config;
pub mod context;
pub mod control;
pub mod doctor;
pub mod encoder;
pub mod expiry;
pub mod guard;
pub mod ice;
pub mod input;
pub mod media;
pub mod metrics;
pub mod pacing;
pub mod pipeline;
pub mod rate;
pub mod session;
pub mod signalling;
pub mod stage_timing;
pub mod stats;
pub mod thumbnail;
pub mod tls;
pub mod wsmedia;
