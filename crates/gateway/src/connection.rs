//! One client connection: read, decode, execute, reply, in order.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use murakumo_protocol::{AfterError, BINARY_REQUEST_MAGIC, Decoded, Limits, ascii, binary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Gateway;
use crate::closing::Closing;
use crate::conns::{ConnState, Registration};
use crate::stats::bump;
use crate::watch::{self, CloseReason, Watcher};

/// Initial read buffer; it grows only as far as one maximal frame needs.
const READ_CHUNK: usize = 16 * 1024;

/// Values at least this long are sent from where the store keeps them (with a vectored
/// write) instead of being copied into the reply buffer. Copying a 100 KiB value was a
/// tenth of the server's time on a load of 100 KiB gets; below a few pages the copy costs
/// less than the extra bookkeeping.
const SEND_IN_PLACE_FROM: usize = 16 * 1024;

/// Read and reply buffers that have grown past this (for one large value, a long
/// multi-get) are given back once empty, so that an idle connection holds about
/// `READ_CHUNK` of each however large its past requests were: 200 idle connections that
/// had each sent a 1 MB value held 200 MiB of read buffers before, and as much again for
/// fetching one.
const RETAIN_AT_MOST: usize = 4 * READ_CHUNK;

/// Frames at least this long have their value handed on as a slice of the read buffer
/// instead of a copy (see [`Connection::next_request`]). Below it the copy costs
/// less than splitting the buffer, which makes its next growth a fresh allocation.
const SHARE_VALUES_FROM: usize = 16 * 1024;

/// What a protocol's request decoder answers: a request, or a rejection to send.
type Decision<T, E> = Decoded<Result<T, E>>;

/// How one protocol's requests are decoded (see [`Connection::next_request`]).
struct Codec<T, E> {
    expected_frame_len: fn(&[u8], &Limits) -> Option<usize>,
    decode: fn(&[u8], &Limits) -> Decision<T, E>,
    decode_shared: fn(&Bytes, &Limits) -> Decision<T, E>,
}

const ASCII: Codec<ascii::Request, ascii::Rejection> = Codec {
    expected_frame_len: ascii::expected_frame_len,
    decode: ascii::decode_request,
    decode_shared: ascii::decode_request_shared,
};

const BINARY: Codec<binary::Request, binary::Rejection> = Codec {
    expected_frame_len: binary::expected_frame_len,
    decode: binary::decode_request,
    decode_shared: binary::decode_request_shared,
};

/// A frame whose length is known gets all its room at once when at least this share of
/// it (one in eight) has arrived (see [`Connection::room_for_next_read`]).
const PRESIZE_ONCE_ONE_IN: usize = 8;

/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;

/// Which protocol a connection speaks; fixed by its first byte, as in memcached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Ascii,
    Binary,
}

/// What to do after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Next request.
    Continue,
    /// Write what is buffered, then close (`quit`, an unrecoverable framing error).
    Close,
    /// Write what is buffered, then send log lines of these kinds from now on (`watch`).
    Watch(ascii::WatchKinds),
}

/// A client connection.
///
/// The loop is mini-redis's check–parse–advance: decode as many whole frames as the read
/// buffer holds, execute each in order and append its reply to the write buffer, and
/// write the buffer out when the input runs dry (so a pipeline of requests costs one
/// write) or when it grows past the output limit (so memory stays bounded). Requests are
/// executed one at a time, which is what keeps replies in request order.
pub(crate) struct Connection {
    stream: TcpStream,
    pub(crate) gateway: Arc<Gateway>,
    input: BytesMut,
    /// `input` has grown past [`RETAIN_AT_MOST`]; it is replaced once empty.
    input_grew: bool,
    pub(crate) out: BytesMut,
    /// Reply parts that precede `out`: large values shared with the store (see
    /// [`put_value`](Self::put_value)) and the reply bytes written before each of them.
    parts: VecDeque<Bytes>,
    /// Bytes in `parts`, which count against the output limit like `out`.
    parts_len: usize,
    /// Bytes of a rejected data block still to discard.
    swallow: u64,
    protocol: Option<Protocol>,
    /// Binary SASL: whether this connection has authenticated (always true without SASL).
    pub(crate) authenticated: bool,
    /// This connection's line in `stats conns`.
    listed: Registration,
    /// Return flags of the meta reply being built, kept between replies for its capacity.
    pub(crate) meta_flags: Vec<ascii::ReturnFlag>,
    /// The client's address, for `watch connevents`.
    peer: SocketAddr,
    /// The socket's descriptor: what memcached's logs name a connection by (`cfd`).
    pub(crate) fd: i32,
    /// Why the connection ended, once it has (for `watch connevents`).
    close_reason: CloseReason,
}

/// The write side failed; the connection is over.
#[derive(Debug)]
pub(crate) struct Disconnected;

impl Connection {
    pub(crate) fn new(stream: TcpStream, gateway: Arc<Gateway>) -> Self {
        let authenticated = gateway.config.sasl_users.is_none();
        // A client that is already gone has no address; it will be closed at the first read.
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        let peer = stream.peer_addr().unwrap_or(unknown);
        let fd = stream.as_raw_fd();
        let listed = gateway.connections.register(
            fd,
            peer,
            stream.local_addr().unwrap_or(unknown),
            gateway.store.clock().now(),
        );
        Self {
            peer,
            fd,
            close_reason: CloseReason::Normal,
            listed,
            stream,
            gateway,
            input: BytesMut::with_capacity(READ_CHUNK),
            input_grew: false,
            out: BytesMut::with_capacity(READ_CHUNK),
            parts: VecDeque::new(),
            parts_len: 0,
            swallow: 0,
            protocol: None,
            authenticated,
            meta_flags: Vec::new(),
        }
    }

    /// Serves the client until it leaves, a limit or a framing error ends the connection,
    /// or `closing` resolves (shutdown: the request in progress is finished first).
    pub(crate) async fn run(mut self, mut closing: Closing) {
        let stats = &self.gateway.stats;
        bump(&stats.total_connections);
        stats.curr_connections.add(1);
        self.gateway.watchers.connected(self.peer, self.fd);
        if let Err(Disconnected) = self.serve(&mut closing).await {
            tracing::debug!("client went away mid-reply");
            self.close_reason = CloseReason::Error;
        }
        let _ = self.stream.shutdown().await;
        self.gateway.stats.curr_connections.sub(1);
        self.gateway
            .watchers
            .closed(self.peer, self.close_reason, self.fd);
    }

    async fn serve(&mut self, closing: &mut Closing) -> Result<(), Disconnected> {
        loop {
            match self.process_buffered().await? {
                Flow::Continue => {}
                Flow::Close => return self.flush().await,
                Flow::Watch(kinds) => {
                    let Some(watcher) = self.gateway.watchers.add(kinds) else {
                        // memcached answers and goes on serving the connection.
                        self.out.extend_from_slice(watch::TOO_MANY);
                        continue;
                    };
                    let streamed = self.stream_log(&watcher, closing).await;
                    self.gateway.watchers.remove(&watcher);
                    return streamed;
                }
            }
            self.flush().await?;
            if let Some(state) = self.waiting_state() {
                self.listed.info().set_state(state);
            }
            match self.read_more(closing).await {
                ReadOutcome::Data => {}
                ReadOutcome::Closed => return Ok(()),
            }
        }
    }

    /// Executes every whole frame in the read buffer.
    async fn process_buffered(&mut self) -> Result<Flow, Disconnected> {
        loop {
            if self.swallow > 0 {
                let n = self.swallow.min(self.input.len() as u64);
                self.input.advance(n as usize);
                self.swallow -= n;
                if self.swallow > 0 {
                    return Ok(Flow::Continue);
                }
            }
            let Some(&first) = self.input.first() else {
                return Ok(Flow::Continue);
            };
            let protocol = *self
                .protocol
                .get_or_insert(if first == BINARY_REQUEST_MAGIC {
                    Protocol::Binary
                } else {
                    Protocol::Ascii
                });
            let flow = match protocol {
                Protocol::Ascii => match self.next_request(&ASCII) {
                    None => return Ok(Flow::Continue),
                    Some(Ok(request)) => self.execute_ascii(request).await?,
                    Some(Err(rejection)) => {
                        if rejection.is_too_large() {
                            bump(&self.gateway.stats.store_too_large);
                        }
                        if let Some(key) = rejection.invalidates {
                            self.drop_stale_value(key).await;
                        }
                        if !rejection.noreply {
                            ascii::encode_response(
                                &ascii::Response::Error(rejection.reply),
                                &mut self.out,
                            );
                        }
                        self.after_error(rejection.after)
                    }
                },
                Protocol::Binary => match self.next_request(&BINARY) {
                    None => return Ok(Flow::Continue),
                    Some(Ok(request)) => self.execute_binary(request).await?,
                    Some(Err(rejection)) => {
                        if rejection.response.status == binary::Status::ValueTooLarge {
                            bump(&self.gateway.stats.store_too_large);
                        }
                        binary::encode_response(&rejection.response, &mut self.out);
                        self.after_error(rejection.after)
                    }
                },
            };
            if flow != Flow::Continue {
                return Ok(flow);
            }
            if self.output_full() {
                self.flush().await?;
            }
        }
    }

    /// Notes in `stats conns` that a command arrived and is being executed.
    fn command_started(&self) {
        let info = self.listed.info();
        info.command_at(self.gateway.store.clock().now());
        info.set_state(ConnState::Execute);
    }

    /// What the connection waits for when it next reads, for `stats conns`; `None` before
    /// its first command (it stays "new").
    fn waiting_state(&self) -> Option<ConnState> {
        let protocol = self.protocol?;
        Some(if self.swallow > 0 {
            ConnState::Swallow
        } else if match protocol {
            // A whole command line is waiting for its data block. Only the first line's
            // length is searched, not a large value received so far.
            Protocol::Ascii => {
                let line_end = self
                    .input
                    .len()
                    .min(self.gateway.config.limits.max_line_len + 2);
                self.input[..line_end].contains(&b'\n')
            }
            Protocol::Binary => self.input.len() >= binary::HEADER_LEN,
        } {
            ConnState::ReadData
        } else {
            ConnState::Read
        })
    }

    /// After `watch`: answers `OK`, then sends `watcher`'s log lines as they come, until
    /// the client goes away or the node stops. The connection takes no more commands
    /// (what the client sends is read and dropped, as memcached does), and a client that
    /// stops reading holds up nobody: its lines wait in its bounded buffer and the rest
    /// are skipped.
    async fn stream_log(
        &mut self,
        watcher: &Watcher,
        closing: &mut Closing,
    ) -> Result<(), Disconnected> {
        self.out.extend_from_slice(b"OK\r\n");
        let mut dropped = [0u8; 1024];
        loop {
            tokio::select! {
                biased;
                () = &mut *closing => {
                    self.close_reason = CloseReason::Shutdown;
                    return Ok(());
                }
                flushed = self.flush() => flushed?,
            }
            let lines = watcher.take();
            if !lines.is_empty() {
                self.out.extend_from_slice(&lines);
                continue;
            }
            tokio::select! {
                biased;
                () = &mut *closing => {
                    self.close_reason = CloseReason::Shutdown;
                    return Ok(());
                }
                () = watcher.arrival() => {}
                read = self.stream.read(&mut dropped) => match read {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(_) => {
                        self.close_reason = CloseReason::Error;
                        return Ok(());
                    }
                },
            }
        }
    }

    /// Removes the value of a key whose `set` was refused for size (memcached does the
    /// same, so the client never reads back the value it tried to replace). A failure here
    /// is the store's to report; the client already gets the size error.
    async fn drop_stale_value(&mut self, key: Bytes) {
        let request = murakumo_server::ops::DeleteRequest::new(key);
        if let Err(err) = self
            .gateway
            .store
            .delete(self.gateway.namespace, request)
            .await
        {
            tracing::debug!(error = %err, "could not drop the value behind a refused set");
        }
    }

    fn after_error(&mut self, after: AfterError) -> Flow {
        match after {
            AfterError::Continue => Flow::Continue,
            AfterError::Swallow(bytes) => {
                self.swallow = bytes;
                Flow::Continue
            }
            AfterError::Close => {
                self.close_reason = CloseReason::Error;
                Flow::Close
            }
        }
    }

    /// Whether the reply buffer has grown past the limit and must be written out before
    /// more is added. Executors check this between the parts of a long reply (a
    /// multi-get), which is what bounds memory. It is a plain check rather than an async
    /// "flush if full" because it runs after every request, and awaiting a future that
    /// almost never waits still cost a state machine's worth of work each time.
    pub(crate) fn output_full(&self) -> bool {
        self.out.len() + self.parts_len >= self.gateway.config.max_output_buffer
    }

    /// Appends a value to the reply: copied if it is small, and otherwise queued as the
    /// `Bytes` that `shared` returns (the same bytes, shared with the store), so that the
    /// socket write reads it from where it is stored.
    pub(crate) fn put_value(&mut self, value: &[u8], shared: impl FnOnce() -> Bytes) {
        if value.len() < SEND_IN_PLACE_FROM {
            self.out.extend_from_slice(value);
            return;
        }
        if !self.out.is_empty() {
            // Copied rather than split off, so that `out` keeps sole ownership of its
            // buffer and its capacity says how much memory it holds (see `flush`). It is
            // the reply since the last flush: a line, or at most the output limit.
            let before = Bytes::copy_from_slice(&self.out);
            self.out.clear();
            self.parts_len += before.len();
            self.parts.push_back(before);
        }
        let len = value.len();
        let value = shared();
        debug_assert_eq!(value.len(), len, "the shared value must be the same bytes");
        self.parts_len += value.len();
        self.parts.push_back(value);
    }

    pub(crate) async fn flush(&mut self) -> Result<(), Disconnected> {
        if !self.parts.is_empty() && !self.out.is_empty() {
            let rest = Bytes::copy_from_slice(&self.out);
            self.out.clear();
            self.parts_len += rest.len();
            self.parts.push_back(rest);
        }
        let written = (self.out.len() + self.parts_len) as u64;
        if written == 0 {
            return Ok(());
        }
        // Usually the socket takes the whole reply at once: try that without the future
        // (and timer) machinery, and wait only for what it did not take.
        match self.write_some() {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(Disconnected),
        }
        if !self.written_out() {
            self.listed.info().set_state(ConnState::Write);
            // A client that stops reading holds its connection only as long as an idle
            // one may: the write is abandoned and the connection closed after the idle
            // timeout.
            match self.gateway.config.idle_timeout {
                Some(limit) => {
                    let Ok(result) = tokio::time::timeout(limit, self.write_rest()).await else {
                        bump(&self.gateway.stats.idle_kicks);
                        return Err(Disconnected);
                    };
                    result.map_err(|_| Disconnected)?;
                }
                None => self.write_rest().await.map_err(|_| Disconnected)?,
            }
            self.listed.info().set_state(ConnState::Execute);
        }
        self.out.clear();
        if self.out.capacity() > RETAIN_AT_MOST {
            self.out = BytesMut::with_capacity(READ_CHUNK);
        }
        self.gateway.stats.bytes_written.add(written);
        Ok(())
    }

    /// Whether the whole reply has been written.
    fn written_out(&self) -> bool {
        self.out.is_empty() && self.parts.is_empty()
    }

    /// Writes as much of the reply as the socket takes now, without waiting. While there
    /// are shared parts, `flush` has moved the rest of the reply behind them, so `out` is
    /// empty and the parts are the whole reply.
    fn write_some(&mut self) -> std::io::Result<()> {
        if self.parts.is_empty() {
            let n = self.stream.try_write(&self.out)?;
            if n == 0 && !self.out.is_empty() {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.out.advance(n);
            return Ok(());
        }
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let mut count = 0;
        for (slot, part) in slices.iter_mut().zip(&self.parts) {
            *slot = IoSlice::new(part);
            count += 1;
        }
        let mut n = self.stream.try_write_vectored(&slices[..count])?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.parts_len -= n;
        while n > 0 {
            let Some(front) = self.parts.front_mut() else {
                break;
            };
            if n < front.len() {
                front.advance(n);
                break;
            }
            n -= front.len();
            self.parts.pop_front();
        }
        Ok(())
    }

    /// Writes the rest of the reply, waiting for the socket as needed.
    async fn write_rest(&mut self) -> std::io::Result<()> {
        while !self.written_out() {
            self.stream.writable().await?;
            match self.write_some() {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Reads what the client sent next, unless `closing` (the shutdown signal) resolves
    /// first. The read is polled first, so the signal costs a poll only when there is
    /// nothing to read; the check before it is for a client that keeps the socket full.
    async fn read_more(&mut self, closing: &mut Closing) -> ReadOutcome {
        if closing.is_closed() {
            self.close_reason = CloseReason::Shutdown;
            return ReadOutcome::Closed;
        }
        if self.input_grew && self.input.is_empty() {
            self.input = BytesMut::with_capacity(READ_CHUNK);
            self.input_grew = false;
        }
        self.input.reserve(self.room_for_next_read());
        let idle = self.gateway.config.idle_timeout;
        let read = async {
            match idle {
                Some(limit) => tokio::time::timeout(limit, self.stream.read_buf(&mut self.input))
                    .await
                    .ok(),
                None => Some(self.stream.read_buf(&mut self.input).await),
            }
        };
        let result = tokio::select! {
            biased;
            result = read => result,
            () = closing => {
                self.close_reason = CloseReason::Shutdown;
                return ReadOutcome::Closed;
            }
        };
        match result {
            None => {
                bump(&self.gateway.stats.idle_kicks);
                self.close_reason = CloseReason::IdleTimeout;
                ReadOutcome::Closed
            }
            Some(Ok(0)) => ReadOutcome::Closed,
            Some(Err(_)) => {
                self.close_reason = CloseReason::Error;
                ReadOutcome::Closed
            }
            Some(Ok(n)) => {
                self.gateway.stats.bytes_read.add(n as u64);
                // Noted now, while it shows: once a large value has been split off, the
                // buffer reports only the capacity of its own view, not the allocation
                // it keeps alive.
                self.input_grew |= self.input.capacity() > RETAIN_AT_MOST;
                ReadOutcome::Data
            }
        }
    }
}

impl Connection {
    /// Decodes the request at the front of the read buffer, removes its bytes and marks
    /// a command as started; `None` while the frame is incomplete.
    ///
    /// A whole frame of [`SHARE_VALUES_FROM`] bytes or more whose length is known is split
    /// off the buffer and decoded in place, so that its value is a slice of the buffer
    /// rather than a copy; the value is copied once more anyway, into the engine's record.
    /// Anything but a clean decode of exactly that frame (only a malformed one does that)
    /// puts it back, and the request is decoded as usual: the answer is always the one the
    /// whole buffer gives.
    fn next_request<T, E>(&mut self, codec: &Codec<T, E>) -> Option<Result<T, E>> {
        let limits = self.gateway.config.limits;
        if self.input.len() >= SHARE_VALUES_FROM
            && let Some(len) = (codec.expected_frame_len)(&self.input, &limits)
            && (SHARE_VALUES_FROM..=self.input.len()).contains(&len)
        {
            let frame = self.input.split_to(len).freeze();
            match (codec.decode_shared)(&frame, &limits) {
                Decoded::Done {
                    item: item @ Ok(_),
                    consumed,
                } if consumed == len => {
                    self.command_started();
                    return Some(item);
                }
                _ => {
                    let mut restored = BytesMut::with_capacity(len + self.input.len());
                    restored.extend_from_slice(&frame);
                    restored.extend_from_slice(&self.input);
                    self.input = restored;
                }
            }
        }
        match (codec.decode)(&self.input, &limits) {
            Decoded::Incomplete => None,
            Decoded::Done { item, consumed } => {
                self.input.advance(consumed);
                self.command_started();
                Some(item)
            }
        }
    }

    /// Room the next read needs: the rest of the frame at the front of the buffer when its
    /// length is known and an eighth of it is in, else [`READ_CHUNK`] (the buffer doubles
    /// when it must grow).
    ///
    /// Why: growing by doubling while a 512 KiB value arrived allocated seven buffers and
    /// copied about 1 MiB on the way; sized for the rest of the frame once an eighth of it
    /// is in, it copies about 200 KiB. On a 512 KiB 1:1 load (20 connections) the
    /// connection threads spent 398-407 µs of CPU per request instead of 438-450. Why not
    /// from the header alone, as memcached allocates the item: then a client that
    /// declares a 1 MiB value and stalls holds a megabyte (200 such connections took
    /// 231 MiB of RSS, against 4 MiB when the buffer grows with what arrives, and 17 MiB
    /// this way); what a connection holds stays within eight times what it sent. What is
    /// buffered here is always an incomplete frame (whole ones were executed before the
    /// read), and a frame being swallowed is never buffered.
    fn room_for_next_read(&self) -> usize {
        if self.input.is_empty() || self.swallow > 0 {
            return READ_CHUNK;
        }
        let limits = &self.gateway.config.limits;
        let expected = match self.protocol {
            Some(Protocol::Ascii) => ascii::expected_frame_len(&self.input, limits),
            Some(Protocol::Binary) => binary::expected_frame_len(&self.input, limits),
            None => None,
        };
        match expected {
            Some(len)
                if len > self.input.len()
                    && self.input.len().saturating_mul(PRESIZE_ONCE_ONE_IN) >= len =>
            {
                len - self.input.len()
            }
            _ => READ_CHUNK,
        }
    }
}

enum ReadOutcome {
    Data,
    Closed,
}
