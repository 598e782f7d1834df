//! Admission under the connection cap (`max_connections`), and shedding under pressure.
//!
//! Every open connection holds one of `max_connections` places. While it has not logged in,
//! its place is kept here, with the time of its last command and a signal to close. When a
//! new connection finds every place taken, the connection that has not logged in and has
//! been idle the longest gives up its place at once and is told to close: idle connections
//! that never log in cannot keep real clients out. A logged-in session takes its place out
//! of here and is never shed. Only when every place belongs to a logged-in session is a new
//! connection refused.
//!
//! This module decides who goes; it does not talk to clients (the connection says goodbye
//! when it sees its signal).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// The places of one process: free ones, and those of connections not logged in yet.
#[derive(Debug)]
pub(crate) struct Admission {
    free: Arc<Semaphore>,
    waiting: Mutex<Waiting>,
}

/// Connections that have not logged in, by id.
#[derive(Debug, Default)]
struct Waiting {
    next_id: u64,
    /// Counts admissions and commands: a smaller `last_active` was idle for longer.
    clock: u64,
    entries: HashMap<u64, Entry>,
}

impl Waiting {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

#[derive(Debug)]
struct Entry {
    place: OwnedSemaphorePermit,
    last_active: u64,
    shed: CancellationToken,
}

/// A new connection's place.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) ticket: Ticket,
    /// Whether another connection was shed to make room.
    pub(crate) shed_another: bool,
}

impl Admission {
    /// `places` connections at once.
    pub(crate) fn new(places: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Arc::new(Semaphore::new(places)),
            waiting: Mutex::new(Waiting::default()),
        })
    }

    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        // The map stays consistent whatever panicked while holding it.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a new connection: a free one, or else the place of the connection that
    /// has not logged in and has been idle the longest, which is told to close. `None` when
    /// every place belongs to a logged-in session.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut waiting = self.waiting();
        let (place, shed_another) = match self.free.clone().try_acquire_owned() {
            Ok(place) => (place, false),
            Err(_) => {
                let oldest = waiting
                    .entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.last_active)
                    .map(|(id, _)| *id)?;
                let entry = waiting.entries.remove(&oldest)?;
                entry.shed.cancel();
                (entry.place, true)
            }
        };
        let id = waiting.next_id;
        waiting.next_id += 1;
        let shed = CancellationToken::new();
        let last_active = waiting.tick();
        waiting.entries.insert(
            id,
            Entry {
                place,
                last_active,
                shed: shed.clone(),
            },
        );
        Some(Admitted {
            ticket: Ticket {
                admission: Arc::clone(self),
                id,
                shed,
                place: None,
            },
            shed_another,
        })
    }
}

/// A connection's hold on its place, for as long as the connection lives.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    shed: CancellationToken,
    /// The place, once the connection logged in and took it out of the shedding order.
    place: Option<OwnedSemaphorePermit>,
}

impl Ticket {
    /// Records a command: the connection is no longer idle.
    pub(crate) fn touch(&self) {
        let mut waiting = self.admission.waiting();
        let now = waiting.tick();
        if let Some(entry) = waiting.entries.get_mut(&self.id) {
            entry.last_active = now;
        }
    }

    /// Cancelled when this connection was shed; it should close. Once logged in, it is
    /// never cancelled, except when the login and the shedding crossed (the session then
    /// ignores it and keeps going).
    pub(crate) fn shed_signal(&self) -> &CancellationToken {
        &self.shed
    }

    /// The connection logged in: its place is no longer offered to newcomers.
    pub(crate) fn logged_in(&mut self) {
        if self.place.is_none()
            && let Some(entry) = self.admission.waiting().entries.remove(&self.id)
        {
            self.place = Some(entry.place);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let entry = self.admission.waiting().entries.remove(&self.id);
        // Released outside the lock; a shed connection's place already belongs to another.
        drop(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_idle_connection_not_logged_in_makes_room() {
        let admission = Admission::new(3);
        let first = admission.admit().unwrap();
        let second = admission.admit().unwrap();
        let mut third = admission.admit().unwrap();
        assert!(!first.shed_another && !second.shed_another && !third.shed_another);

        // The first is the oldest, but it just sent a command; the third logged in.
        first.ticket.touch();
        third.ticket.logged_in();
        let fourth = admission.admit().unwrap();
        assert!(fourth.shed_another);
        assert!(second.ticket.shed_signal().is_cancelled());
        assert!(!first.ticket.shed_signal().is_cancelled());

        let fifth = admission.admit().unwrap();
        assert!(first.ticket.shed_signal().is_cancelled());
        let sixth = admission.admit().unwrap();
        assert!(fourth.ticket.shed_signal().is_cancelled());
        // Only the logged-in session and the newest connections hold places now.
        let seventh = admission.admit().unwrap();
        assert!(fifth.ticket.shed_signal().is_cancelled());
        drop((first, second, fourth, fifth));
        assert!(!third.ticket.shed_signal().is_cancelled());
        drop(sixth);
        drop(seventh);
    }

    #[test]
    fn logged_in_sessions_are_never_shed() {
        let admission = Admission::new(2);
        let mut sessions: Vec<Admitted> = (0..2).map(|_| admission.admit().unwrap()).collect();
        for session in &mut sessions {
            session.ticket.logged_in();
        }
        assert!(admission.admit().is_none());
        // A session that ends frees its place.
        sessions.pop();
        let next = admission.admit().unwrap();
        assert!(!next.shed_another);
        assert!(
            admission.admit().is_some(),
            "the newcomer was not logged in"
        );
    }
}
