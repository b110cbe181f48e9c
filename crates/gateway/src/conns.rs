//! The table behind `stats conns`: each listener and open client connection, what it is
//! doing, and when it last sent a command.
//!
//! Why: an operator chasing a stuck or idle client needs to see who is connected and what
//! each connection waits for. memcached's `stats conns` answers that, and tools parse its
//! state names, so they are reused here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;

/// What a connection is doing, named as memcached names its connection states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ConnState {
    /// Connected, no command yet.
    NewCommand,
    /// Waiting for (the rest of) a command line.
    Read,
    /// Waiting for the rest of a data block.
    ReadData,
    /// Executing commands.
    Execute,
    /// Waiting for the client to take its reply.
    Write,
    /// Discarding the data block of a rejected command.
    Swallow,
}

impl ConnState {
    fn from_u8(value: u8) -> Self {
        [
            Self::NewCommand,
            Self::Read,
            Self::ReadData,
            Self::Execute,
            Self::Write,
            Self::Swallow,
        ]
        .into_iter()
        .find(|state| *state as u8 == value)
        .unwrap_or(Self::Read)
    }

    fn memcached_name(self) -> &'static str {
        match self {
            Self::NewCommand => "conn_new_cmd",
            Self::Read => "conn_read",
            Self::ReadData => "conn_nread",
            Self::Execute => "conn_parse_cmd",
            Self::Write => "conn_mwrite",
            Self::Swallow => "conn_swallow",
        }
    }
}

/// One open connection's entry. The connection updates it with relaxed stores (it is the
/// only writer); `stats conns` reads it from any thread.
#[derive(Debug)]
pub(crate) struct ConnectionInfo {
    fd: i32,
    peer: SocketAddr,
    local: SocketAddr,
    state: AtomicU8,
    /// Unix seconds of the last command (of the connect, before the first).
    last_command: AtomicU32,
}

impl ConnectionInfo {
    pub(crate) fn set_state(&self, state: ConnState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub(crate) fn state(&self) -> ConnState {
        ConnState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub(crate) fn command_at(&self, now: u32) {
        self.last_command.store(now, Ordering::Relaxed);
    }
}

/// A listening socket, for its `conn_listening` line.
#[derive(Debug, Clone, Copy)]
struct ListenerInfo {
    fd: i32,
    addr: SocketAddr,
    since: u32,
}

/// Every listener and open connection of a gateway.
#[derive(Debug, Default)]
pub(crate) struct ConnectionTable {
    next_id: AtomicU64,
    connections: Mutex<BTreeMap<u64, Arc<ConnectionInfo>>>,
    listeners: Mutex<BTreeMap<u64, ListenerInfo>>,
}

impl ConnectionTable {
    /// Adds a connection; it stays listed until the returned guard is dropped.
    pub(crate) fn register(
        self: &Arc<Self>,
        fd: i32,
        peer: SocketAddr,
        local: SocketAddr,
        now: u32,
    ) -> Registration {
        let info = Arc::new(ConnectionInfo {
            fd,
            peer,
            local,
            state: AtomicU8::new(ConnState::NewCommand as u8),
            last_command: AtomicU32::new(now),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.connections.lock().insert(id, Arc::clone(&info));
        Registration {
            table: Arc::clone(self),
            id,
            info,
        }
    }

    /// Adds a listening socket; it stays listed until the returned guard is dropped.
    pub(crate) fn register_listener(
        self: &Arc<Self>,
        fd: i32,
        addr: SocketAddr,
        now: u32,
    ) -> ListenerRegistration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.listeners.lock().insert(
            id,
            ListenerInfo {
                fd,
                addr,
                since: now,
            },
        );
        ListenerRegistration {
            table: Arc::clone(self),
            id,
        }
    }

    /// `stats conns` lines, ordered by file descriptor as memcached orders them.
    pub(crate) fn lines(&self, now: u32) -> Vec<(String, String)> {
        let mut rows: Vec<(i32, Vec<(&str, String)>)> = Vec::new();
        for listener in self.listeners.lock().values() {
            rows.push((
                listener.fd,
                vec![
                    ("addr", format!("tcp:{}", listener.addr)),
                    ("state", "conn_listening".to_owned()),
                    (
                        "secs_since_last_cmd",
                        now.saturating_sub(listener.since).to_string(),
                    ),
                ],
            ));
        }
        for info in self.connections.lock().values() {
            let last = info.last_command.load(Ordering::Relaxed);
            rows.push((
                info.fd,
                vec![
                    ("addr", format!("tcp:{}", info.peer)),
                    ("listen_addr", format!("tcp:{}", info.local)),
                    ("state", info.state().memcached_name().to_owned()),
                    ("secs_since_last_cmd", now.saturating_sub(last).to_string()),
                ],
            ));
        }
        rows.sort_by_key(|(fd, _)| *fd);
        rows.into_iter()
            .flat_map(|(fd, fields)| {
                fields
                    .into_iter()
                    .map(move |(name, value)| (format!("{fd}:{name}"), value))
            })
            .collect()
    }
}

/// Keeps a connection in the [`ConnectionTable`] for as long as it lives.
#[derive(Debug)]
pub(crate) struct Registration {
    table: Arc<ConnectionTable>,
    id: u64,
    info: Arc<ConnectionInfo>,
}

impl Registration {
    /// The entry the connection keeps up to date.
    pub(crate) fn info(&self) -> &ConnectionInfo {
        &self.info
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.table.connections.lock().remove(&self.id);
    }
}

/// Keeps a listener in the [`ConnectionTable`] for as long as it lives.
#[derive(Debug)]
pub(crate) struct ListenerRegistration {
    table: Arc<ConnectionTable>,
    id: u64,
}

impl Drop for ListenerRegistration {
    fn drop(&mut self) {
        self.table.listeners.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn lines_follow_memcached_and_entries_leave_with_their_guard() {
        let table = Arc::new(ConnectionTable::default());
        let listener = table.register_listener(5, addr(11211), 100);
        let later = table.register(9, addr(40002), addr(11211), 110);
        let first = table.register(7, addr(40001), addr(11211), 105);
        first.info().set_state(ConnState::Execute);
        later.info().command_at(118);
        let lines = table.lines(120);
        let text: Vec<String> = lines.iter().map(|(k, v)| format!("{k} {v}")).collect();
        assert_eq!(
            text,
            [
                "5:addr tcp:127.0.0.1:11211",
                "5:state conn_listening",
                "5:secs_since_last_cmd 20",
                "7:addr tcp:127.0.0.1:40001",
                "7:listen_addr tcp:127.0.0.1:11211",
                "7:state conn_parse_cmd",
                "7:secs_since_last_cmd 15",
                "9:addr tcp:127.0.0.1:40002",
                "9:listen_addr tcp:127.0.0.1:11211",
                "9:state conn_new_cmd",
                "9:secs_since_last_cmd 2",
            ]
        );
        drop(first);
        drop(listener);
        let left: Vec<String> = table.lines(120).into_iter().map(|(k, _)| k).collect();
        assert!(left.iter().all(|k| k.starts_with("9:")), "{left:?}");
        drop(later);
        assert!(table.lines(120).is_empty());
    }

    #[test]
    fn every_state_survives_the_round_trip_through_its_byte() {
        for state in [
            ConnState::NewCommand,
            ConnState::Read,
            ConnState::ReadData,
            ConnState::Execute,
            ConnState::Write,
            ConnState::Swallow,
        ] {
            assert_eq!(ConnState::from_u8(state as u8), state);
        }
    }
}
