//! One client connection: read, decode, execute, reply, in order.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use murakumo_protocol::{AfterError, BINARY_REQUEST_MAGIC, Decoded, ascii, binary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Gateway;
use crate::closing::Closing;
use crate::conns::{ConnState, Registration};
use crate::stats::bump;

/// Initial read buffer; it grows only as far as one maximal frame needs.
const READ_CHUNK: usize = 16 * 1024;

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
    pub(crate) out: BytesMut,
    /// Bytes of a rejected data block still to discard.
    swallow: u64,
    protocol: Option<Protocol>,
    /// Binary SASL: whether this connection has authenticated (always true without SASL).
    pub(crate) authenticated: bool,
    /// This connection's line in `stats conns`.
    listed: Registration,
    /// Return flags of the meta reply being built, kept between replies for its capacity.
    pub(crate) meta_flags: Vec<ascii::ReturnFlag>,
}

/// The write side failed; the connection is over.
#[derive(Debug)]
pub(crate) struct Disconnected;

impl Connection {
    pub(crate) fn new(stream: TcpStream, gateway: Arc<Gateway>) -> Self {
        let authenticated = gateway.config.sasl_users.is_none();
        // A client that is already gone has no address; it will be closed at the first read.
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        let listed = gateway.connections.register(
            stream.as_raw_fd(),
            stream.peer_addr().unwrap_or(unknown),
            stream.local_addr().unwrap_or(unknown),
            gateway.store.clock().now(),
        );
        Self {
            listed,
            stream,
            gateway,
            input: BytesMut::with_capacity(READ_CHUNK),
            out: BytesMut::with_capacity(READ_CHUNK),
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
        if let Err(Disconnected) = self.serve(&mut closing).await {
            tracing::debug!("client went away mid-reply");
        }
        let _ = self.stream.shutdown().await;
        self.gateway.stats.curr_connections.sub(1);
    }

    async fn serve(&mut self, closing: &mut Closing) -> Result<(), Disconnected> {
        loop {
            if self.process_buffered().await? == Flow::Close {
                return self.flush().await;
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
                Protocol::Ascii => {
                    match ascii::decode_request(&self.input, &self.gateway.config.limits) {
                        Decoded::Incomplete => return Ok(Flow::Continue),
                        Decoded::Done { item, consumed } => {
                            self.input.advance(consumed);
                            self.command_started();
                            match item {
                                Ok(request) => self.execute_ascii(request).await?,
                                Err(rejection) => {
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
                            }
                        }
                    }
                }
                Protocol::Binary => {
                    match binary::decode_request(&self.input, &self.gateway.config.limits) {
                        Decoded::Incomplete => return Ok(Flow::Continue),
                        Decoded::Done { item, consumed } => {
                            self.input.advance(consumed);
                            self.command_started();
                            match item {
                                Ok(request) => self.execute_binary(request).await?,
                                Err(rejection) => {
                                    binary::encode_response(&rejection.response, &mut self.out);
                                    self.after_error(rejection.after)
                                }
                            }
                        }
                    }
                }
            };
            if flow == Flow::Close {
                return Ok(Flow::Close);
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

    /// Removes the value of a key whose `set` was refused for size (memcached does the
    /// same, so the client never reads back the value it tried to replace). A failure here
    /// is the store's to report; the client already gets the size error.
    async fn drop_stale_value(&mut self, key: bytes::Bytes) {
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
            AfterError::Close => Flow::Close,
        }
    }

    /// Whether the reply buffer has grown past the limit and must be written out before
    /// more is added. Executors check this between the parts of a long reply (a
    /// multi-get), which is what bounds memory. It is a plain check rather than an async
    /// "flush if full" because it runs after every request, and awaiting a future that
    /// almost never waits still cost a state machine's worth of work each time.
    pub(crate) fn output_full(&self) -> bool {
        self.out.len() >= self.gateway.config.max_output_buffer
    }

    pub(crate) async fn flush(&mut self) -> Result<(), Disconnected> {
        if self.out.is_empty() {
            return Ok(());
        }
        let written = self.out.len() as u64;
        // Usually the socket takes the whole reply at once: try that without the future
        // (and timer) machinery, and wait only for what it did not take.
        match self.stream.try_write(&self.out) {
            Ok(n) => self.out.advance(n),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(Disconnected),
        }
        if !self.out.is_empty() {
            self.listed.info().set_state(ConnState::Write);
            let write = self.stream.write_all(&self.out);
            // A client that stops reading holds its connection only as long as an idle
            // one may: the write is abandoned and the connection closed after the idle
            // timeout.
            match self.gateway.config.idle_timeout {
                Some(limit) => {
                    let Ok(result) = tokio::time::timeout(limit, write).await else {
                        bump(&self.gateway.stats.idle_kicks);
                        return Err(Disconnected);
                    };
                    result.map_err(|_| Disconnected)?;
                }
                None => write.await.map_err(|_| Disconnected)?,
            }
            self.listed.info().set_state(ConnState::Execute);
        }
        self.out.clear();
        self.gateway.stats.bytes_written.add(written);
        Ok(())
    }

    /// Reads what the client sent next, unless `closing` (the shutdown signal) resolves
    /// first. The read is polled first, so the signal costs a poll only when there is
    /// nothing to read; the check before it is for a client that keeps the socket full.
    async fn read_more(&mut self, closing: &mut Closing) -> ReadOutcome {
        if closing.is_closed() {
            return ReadOutcome::Closed;
        }
        self.input.reserve(READ_CHUNK);
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
            () = closing => return ReadOutcome::Closed,
        };
        match result {
            None => {
                bump(&self.gateway.stats.idle_kicks);
                ReadOutcome::Closed
            }
            Some(Ok(0) | Err(_)) => ReadOutcome::Closed,
            Some(Ok(n)) => {
                self.gateway.stats.bytes_read.add(n as u64);
                ReadOutcome::Data
            }
        }
    }
}

enum ReadOutcome {
    Data,
    Closed,
}
