//! The HTTP routes of docs/protocol.md, one file per family: pages (HTML), vms (registry and ICE
//! config), session (offer, answer, candidates, end), admin (minting links). Handlers only
//! parse, check access, call the relay and render; they hold no state of their own.

pub mod admin;
pub mod pages;
pub mod session;
pub mod vms;
