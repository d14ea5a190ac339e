//! One user in control at a time. `Control` is the pure state machine (who is here, who holds
//! control, who asked for it), unit-tested without X or GStreamer; `Room` is the agent's one
//! instance of it, shared by every session, which tells every viewer about each change and has
//! the previous holder's keys and buttons released on every handover.
//!
//! Rules: the first viewer with a `control` (or `admin`) link to arrive holds control. Others
//! may ask (`requestControl`): granted at once when nobody holds it, otherwise noted for the
//! holder to see. The holder may give it to a viewer that may control (`giveControl`) or release
//! it (`releaseControl`), in which case it passes to the viewer that asked first, if any. An
//! `admin` viewer may take it (`takeControl`). When the holder leaves (its session ends or its
//! `input` channel closes), control passes as on a release; a viewer that arrives with the
//! holder's own link takes its control over (a reloaded page). A `view` viewer never holds control. The agent drops input from anyone but the holder.

use std::sync::{Arc, Mutex};

use vdesk_protocol::{AgentToViewer, ControlViewer, Permission};

/// The agent's id for a viewer in the room (not its session id, which other viewers must not learn).
pub type ViewerId = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    id: ViewerId,
    name: String,
    permission: Permission,
    /// The link it came with (`SessionGrant.owner`), if known.
    owner: Option<String>,
    /// When it asked for control (a sequence number), if it waits for it.
    requested: Option<u64>,
}

/// What a viewer asks of the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Request,
    Release,
    Give { to: String },
    Take,
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Control moved from one viewer (or nobody) to another (or nobody).
    Handover {
        from: Option<ViewerId>,
        to: Option<ViewerId>,
    },
    /// Nobody's control changed, but what viewers see did (a request was noted).
    Noted,
    /// Nothing to do (asking for what one already has).
    Unchanged,
    /// Not allowed; the reason is for the viewer (`notice`).
    Refused(&'static str),
}

/// Who is here and who holds control.
#[derive(Debug, Default, Clone)]
pub struct Control {
    members: Vec<Member>,
    holder: Option<ViewerId>,
    next_id: ViewerId,
    next_request: u64,
}

impl Control {
    /// A viewer arrives; it holds control if it may and nobody does, or if the holder came
    /// with the same link (`owner`: the same person back after a reload, whose old session has
    /// not gone yet). Returns its id and the handover, if it got control.
    pub fn join(
        &mut self,
        name: Option<&str>,
        permission: Permission,
        owner: Option<&str>,
    ) -> (ViewerId, Outcome) {
        self.next_id += 1;
        let id = self.next_id;
        let name = name
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .map(|n| n.chars().take(64).collect())
            .unwrap_or_else(|| format!("viewer {id}"));
        self.members.push(Member {
            id,
            name,
            permission,
            owner: owner.map(str::to_owned),
            requested: None,
        });
        let holders_link = self
            .holder
            .and_then(|h| self.member(h))
            .and_then(|m| m.owner.as_deref());
        let same_link = owner.is_some() && holders_link == owner;
        let outcome = if permission.may_control() && (self.holder.is_none() || same_link) {
            self.hand_to(Some(id))
        } else {
            Outcome::Noted
        };
        (id, outcome)
    }

    /// A viewer leaves; if it held control, control passes to the first viewer that asked.
    pub fn leave(&mut self, id: ViewerId) -> Outcome {
        let before = self.members.len();
        self.members.retain(|m| m.id != id);
        if self.members.len() == before {
            return Outcome::Unchanged;
        }
        if self.holder == Some(id) {
            let next = self.first_requester();
            self.hand_to(next)
        } else {
            Outcome::Noted
        }
    }

    pub fn holder(&self) -> Option<ViewerId> {
        self.holder
    }

    pub fn is_holder(&self, id: ViewerId) -> bool {
        self.holder == Some(id)
    }

    fn member(&self, id: ViewerId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    fn first_requester(&self) -> Option<ViewerId> {
        self.members
            .iter()
            .filter_map(|m| m.requested.map(|at| (at, m.id)))
            .min()
            .map(|(_, id)| id)
    }

    fn hand_to(&mut self, to: Option<ViewerId>) -> Outcome {
        let from = self.holder;
        self.holder = to;
        for m in &mut self.members {
            if Some(m.id) == to {
                m.requested = None;
            }
        }
        Outcome::Handover { from, to }
    }

    /// `id` asks for `command`.
    pub fn command(&mut self, id: ViewerId, command: &Command) -> Outcome {
        let Some(me) = self.member(id).cloned() else {
            return Outcome::Refused("not in the room");
        };
        match command {
            Command::Request => {
                if !me.permission.may_control() {
                    Outcome::Refused("this link is view-only")
                } else if self.holder == Some(id) {
                    Outcome::Unchanged
                } else if self.holder.is_none() {
                    self.hand_to(Some(id))
                } else if me.requested.is_some() {
                    Outcome::Unchanged
                } else {
                    self.next_request += 1;
                    let at = self.next_request;
                    for m in &mut self.members {
                        if m.id == id {
                            m.requested = Some(at);
                        }
                    }
                    Outcome::Noted
                }
            }
            Command::Release => {
                if self.holder != Some(id) {
                    // Withdraws a request, if there was one.
                    let mut withdrew = false;
                    for m in &mut self.members {
                        if m.id == id && m.requested.is_some() {
                            m.requested = None;
                            withdrew = true;
                        }
                    }
                    return if withdrew {
                        Outcome::Noted
                    } else {
                        Outcome::Unchanged
                    };
                }
                let next = self.first_requester();
                self.hand_to(next)
            }
            Command::Give { to } => {
                if self.holder != Some(id) {
                    return Outcome::Refused("only the viewer in control can give it");
                }
                let target = self
                    .members
                    .iter()
                    .find(|m| m.id.to_string() == *to)
                    .map(|m| (m.id, m.permission));
                match target {
                    None => Outcome::Refused("no such viewer"),
                    Some((_, p)) if !p.may_control() => {
                        Outcome::Refused("that viewer's link is view-only")
                    }
                    Some((to, _)) if to == id => Outcome::Unchanged,
                    Some((to, _)) => self.hand_to(Some(to)),
                }
            }
            Command::Take => {
                if me.permission != Permission::Admin {
                    Outcome::Refused("only an admin link can take control")
                } else if self.holder == Some(id) {
                    Outcome::Unchanged
                } else {
                    self.hand_to(Some(id))
                }
            }
        }
    }

    /// The `control` message for viewer `you`.
    pub fn message(&self, you: ViewerId) -> AgentToViewer {
        AgentToViewer::Control {
            holder: self.holder.map(|h| h.to_string()),
            you: you.to_string(),
            viewers: self
                .members
                .iter()
                .map(|m| ControlViewer {
                    id: m.id.to_string(),
                    name: m.name.clone(),
                    permission: m.permission,
                    requested: m.requested.is_some(),
                })
                .collect(),
        }
    }

    pub fn ids(&self) -> Vec<ViewerId> {
        self.members.iter().map(|m| m.id).collect()
    }
}

/// How the room reaches one viewer's session.
pub trait Seat: Send + Sync {
    /// Sends a message on the viewer's `input` channel.
    fn send(&self, msg: &AgentToViewer);
    /// Releases every key and button the viewer holds in X (it just lost control).
    fn release_all(&self);
}

/// The agent's room: one `Control` and every viewer's seat. Cheap to clone.
#[derive(Clone, Default)]
pub struct Room(Arc<Mutex<RoomState>>);

#[derive(Default)]
struct RoomState {
    control: Control,
    seats: Vec<(ViewerId, Arc<dyn Seat>)>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Room").field("control", &s.control).finish()
    }
}

impl Room {
    fn lock(&self) -> std::sync::MutexGuard<'_, RoomState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A viewer arrives (with the name and the owner tag of its link); everyone is told.
    pub fn join(
        &self,
        name: Option<&str>,
        permission: Permission,
        owner: Option<&str>,
        seat: Arc<dyn Seat>,
    ) -> ViewerId {
        let (id, outcome, effects) = {
            let mut s = self.lock();
            let (id, outcome) = s.control.join(name, permission, owner);
            s.seats.push((id, seat));
            let effects = Effects::of(&s, &outcome);
            (id, outcome, effects)
        };
        tracing::info!(viewer = id, ?permission, ?outcome, "viewer joins the room");
        effects.apply();
        id
    }

    /// A viewer leaves; everyone left is told.
    pub fn leave(&self, id: ViewerId) {
        let effects = {
            let mut s = self.lock();
            let outcome = s.control.leave(id);
            s.seats.retain(|(i, _)| *i != id);
            Effects::of(&s, &outcome)
        };
        effects.apply();
    }

    /// `id` asks for `command`; the outcome, after everyone was told of a change.
    pub fn command(&self, id: ViewerId, command: &Command) -> Outcome {
        let (outcome, effects) = {
            let mut s = self.lock();
            let outcome = s.control.command(id, command);
            let effects = Effects::of(&s, &outcome);
            (outcome, effects)
        };
        tracing::info!(viewer = id, ?command, ?outcome, "control");
        effects.apply();
        outcome
    }

    pub fn is_holder(&self, id: ViewerId) -> bool {
        self.lock().control.is_holder(id)
    }

    /// The `control` message for `id` now (sent when its channel opens).
    pub fn message(&self, id: ViewerId) -> AgentToViewer {
        self.lock().control.message(id)
    }
}

/// What to do after a change, outside the room's lock: release the old holder's keys, tell
/// everyone.
struct Effects {
    release: Option<Arc<dyn Seat>>,
    tell: Vec<(Arc<dyn Seat>, AgentToViewer)>,
}

impl Effects {
    fn of(s: &RoomState, outcome: &Outcome) -> Effects {
        let seat = |id: ViewerId| {
            s.seats
                .iter()
                .find(|(i, _)| *i == id)
                .map(|(_, seat)| seat.clone())
        };
        let release = match outcome {
            Outcome::Handover {
                from: Some(from),
                to,
            } if Some(*from) != *to => seat(*from),
            _ => None,
        };
        let tell = match outcome {
            Outcome::Handover { .. } | Outcome::Noted => s
                .seats
                .iter()
                .map(|(id, seat)| (seat.clone(), s.control.message(*id)))
                .collect(),
            Outcome::Unchanged | Outcome::Refused(_) => Vec::new(),
        };
        Effects { release, tell }
    }

    fn apply(self) {
        if let Some(seat) = self.release {
            seat.release_all();
        }
        for (seat, msg) in self.tell {
            seat.send(&msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handover(from: Option<ViewerId>, to: Option<ViewerId>) -> Outcome {
        Outcome::Handover { from, to }
    }

    impl Control {
        fn join_(&mut self, name: Option<&str>, permission: Permission) -> (ViewerId, Outcome) {
            self.join(name, permission, None)
        }
    }

    #[test]
    fn a_viewer_back_on_the_holders_link_takes_over_its_control() {
        let mut c = Control::default();
        let (alice, _) = c.join(Some("alice"), Permission::Control, Some("link-a"));
        let (bob, o) = c.join(Some("bob"), Permission::Control, Some("link-b"));
        assert_eq!(o, Outcome::Noted, "another link waits its turn");
        let (alice2, o) = c.join(Some("alice"), Permission::Control, Some("link-a"));
        assert_eq!(
            o,
            handover(Some(alice), Some(alice2)),
            "alice reloaded her page"
        );
        assert_eq!(
            c.leave(alice),
            Outcome::Noted,
            "her old session going changes nothing"
        );
        assert!(c.is_holder(alice2) && !c.is_holder(bob));
        let (_, o) = c.join(None, Permission::View, Some("link-a"));
        assert_eq!(o, Outcome::Noted, "a view link never takes control");
        let (_, o) = c.join(None, Permission::Control, None);
        assert_eq!(o, Outcome::Noted, "no link known: no takeover");
    }

    #[test]
    fn the_first_viewer_that_may_control_holds_control() {
        let mut c = Control::default();
        let (watcher, o) = c.join_(Some("wendy"), Permission::View);
        assert_eq!(o, Outcome::Noted);
        assert_eq!(c.holder(), None, "a view link never holds control");
        let (alice, o) = c.join_(Some("alice"), Permission::Control);
        assert_eq!(o, handover(None, Some(alice)));
        let (bob, o) = c.join_(Some("bob"), Permission::Control);
        assert_eq!(o, Outcome::Noted);
        assert!(c.is_holder(alice) && !c.is_holder(bob) && !c.is_holder(watcher));
    }

    #[test]
    fn request_then_give() {
        let mut c = Control::default();
        let (alice, _) = c.join_(Some("alice"), Permission::Control);
        let (bob, _) = c.join_(Some("bob"), Permission::Control);
        assert_eq!(c.command(bob, &Command::Request), Outcome::Noted);
        assert_eq!(c.command(bob, &Command::Request), Outcome::Unchanged);
        let AgentToViewer::Control {
            viewers,
            holder,
            you,
        } = c.message(alice)
        else {
            panic!()
        };
        assert_eq!(holder, Some(alice.to_string()));
        assert_eq!(you, alice.to_string());
        assert!(viewers.iter().any(|v| v.name == "bob" && v.requested));
        // Only the holder gives.
        assert_eq!(
            c.command(
                bob,
                &Command::Give {
                    to: bob.to_string()
                }
            ),
            Outcome::Refused("only the viewer in control can give it")
        );
        assert_eq!(
            c.command(
                alice,
                &Command::Give {
                    to: bob.to_string()
                }
            ),
            handover(Some(alice), Some(bob))
        );
        assert!(c.is_holder(bob));
        let AgentToViewer::Control { viewers, .. } = c.message(bob) else {
            panic!()
        };
        assert!(
            viewers.iter().all(|v| !v.requested),
            "granted: no longer asking"
        );
    }

    #[test]
    fn release_passes_control_to_the_first_that_asked_or_to_nobody() {
        let mut c = Control::default();
        let (alice, _) = c.join_(None, Permission::Control);
        let (bob, _) = c.join_(None, Permission::Control);
        let (carol, _) = c.join_(None, Permission::Control);
        c.command(carol, &Command::Request);
        c.command(bob, &Command::Request);
        assert_eq!(
            c.command(alice, &Command::Release),
            handover(Some(alice), Some(carol)),
            "in the order they asked"
        );
        assert_eq!(
            c.command(carol, &Command::Release),
            handover(Some(carol), Some(bob))
        );
        assert_eq!(c.command(bob, &Command::Release), handover(Some(bob), None));
        // Nobody holds it: a request is granted at once.
        assert_eq!(
            c.command(alice, &Command::Request),
            handover(None, Some(alice))
        );
        // A non-holder's release withdraws its request.
        c.command(bob, &Command::Request);
        assert_eq!(c.command(bob, &Command::Release), Outcome::Noted);
        assert_eq!(
            c.command(alice, &Command::Release),
            handover(Some(alice), None)
        );
    }

    #[test]
    fn only_admin_takes_and_view_never_controls() {
        let mut c = Control::default();
        let (alice, _) = c.join_(None, Permission::Control);
        let (bob, _) = c.join_(None, Permission::Control);
        let (root, o) = c.join_(Some("root"), Permission::Admin);
        assert_eq!(
            o,
            Outcome::Noted,
            "an admin joining does not take by itself"
        );
        let (watcher, _) = c.join_(None, Permission::View);
        assert_eq!(
            c.command(bob, &Command::Take),
            Outcome::Refused("only an admin link can take control")
        );
        assert_eq!(
            c.command(root, &Command::Take),
            handover(Some(alice), Some(root))
        );
        assert_eq!(c.command(root, &Command::Take), Outcome::Unchanged);
        assert_eq!(
            c.command(watcher, &Command::Request),
            Outcome::Refused("this link is view-only")
        );
        assert_eq!(
            c.command(
                root,
                &Command::Give {
                    to: watcher.to_string()
                }
            ),
            Outcome::Refused("that viewer's link is view-only")
        );
        assert_eq!(
            c.command(root, &Command::Give { to: "99".into() }),
            Outcome::Refused("no such viewer")
        );
        assert_eq!(
            c.command(42, &Command::Request),
            Outcome::Refused("not in the room")
        );
    }

    #[test]
    fn the_holder_leaving_passes_control_on() {
        let mut c = Control::default();
        let (alice, _) = c.join_(None, Permission::Control);
        let (bob, _) = c.join_(None, Permission::Control);
        assert_eq!(c.leave(bob), Outcome::Noted);
        let (carol, _) = c.join_(None, Permission::Control);
        c.command(carol, &Command::Request);
        assert_eq!(c.leave(alice), handover(Some(alice), Some(carol)));
        assert_eq!(c.leave(carol), handover(Some(carol), None));
        assert_eq!(c.leave(carol), Outcome::Unchanged);
        let (dave, o) = c.join_(None, Permission::Control);
        assert_eq!(
            o,
            handover(None, Some(dave)),
            "an empty room's first controller holds it"
        );
    }

    #[test]
    fn names_default_and_are_bounded() {
        let mut c = Control::default();
        let (a, _) = c.join_(None, Permission::View);
        let (_, _) = c.join_(Some("  "), Permission::View);
        let (_, _) = c.join_(Some(&"x".repeat(500)), Permission::View);
        let AgentToViewer::Control { viewers, .. } = c.message(a) else {
            panic!()
        };
        assert_eq!(viewers[0].name, format!("viewer {a}"));
        assert_eq!(viewers[1].name, "viewer 2");
        assert_eq!(viewers[2].name.len(), 64);
    }

    #[derive(Default)]
    struct Recorder {
        sent: Mutex<Vec<AgentToViewer>>,
        released: Mutex<u32>,
    }

    impl Seat for Recorder {
        fn send(&self, msg: &AgentToViewer) {
            self.sent.lock().unwrap().push(msg.clone());
        }
        fn release_all(&self) {
            *self.released.lock().unwrap() += 1;
        }
    }

    #[test]
    fn the_room_tells_everyone_and_releases_the_old_holders_keys() {
        let room = Room::default();
        let a = Arc::new(Recorder::default());
        let b = Arc::new(Recorder::default());
        let ia = room.join(Some("a"), Permission::Control, None, a.clone());
        let ib = room.join(Some("b"), Permission::Admin, None, b.clone());
        assert_eq!(
            a.sent.lock().unwrap().len(),
            2,
            "told of its own join and of b's"
        );
        assert_eq!(b.sent.lock().unwrap().len(), 1);
        assert!(room.is_holder(ia));
        room.command(ib, &Command::Take);
        assert_eq!(
            *a.released.lock().unwrap(),
            1,
            "a's keys released on handover"
        );
        assert_eq!(*b.released.lock().unwrap(), 0);
        let last = b.sent.lock().unwrap().last().cloned().unwrap();
        assert!(
            matches!(last, AgentToViewer::Control { holder: Some(h), .. } if h == ib.to_string())
        );
        // A refusal tells nobody.
        let before = a.sent.lock().unwrap().len();
        room.command(ia, &Command::Give { to: ia.to_string() });
        assert_eq!(a.sent.lock().unwrap().len(), before);
        room.leave(ib);
        assert!(!room.is_holder(ia), "nobody asked: nobody holds control");
        let last = a.sent.lock().unwrap().last().cloned().unwrap();
        assert!(
            matches!(&last, AgentToViewer::Control { holder: None, viewers, .. } if viewers.len() == 1),
            "{last:?}"
        );
    }
}
