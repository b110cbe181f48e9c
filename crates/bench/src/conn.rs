//! One memcached connection: write a batch of requests, read and check their replies.
//!
//! The batch is written and its replies are read at the same time. Writing everything
//! first and reading afterwards would deadlock on deep pipelines with large values: the
//! server stops reading once its replies fill our unread receive buffer, and we stop writing
//! once it stops reading. Every wait is bounded by the timeout, so a stuck server ends the
//! run instead of hanging it.

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use murakumo_protocol::Decoded;
use murakumo_protocol::ascii::{
    self, MetaGet, MetaGetFlag, MetaSet, MetaSetFlag, MetaStatus, Request, Response, ReturnFlag,
    StoreMode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::check::{Check, Expect, FLAGS, Outcome, Reply, Step, show};
use crate::workload::{Op, value_for};
use crate::{BenchError, Protocol};

/// Reply bytes we buffer beyond the largest value we expect before calling the stream
/// garbage: room for a `VALUE` line and a value from another run with a bigger size.
const REPLY_SLACK: usize = 8 * 1024 * 1024;

/// How much the read buffer grows by when it is full.
const READ_CHUNK: usize = 64 * 1024;

/// A connection and its buffers, reused for every batch.
pub(crate) struct Conn {
    stream: TcpStream,
    read_buf: BytesMut,
    write_buf: BytesMut,
    expects: Vec<Expect>,
    timeout: Duration,
    max_buffered: usize,
    protocol: Protocol,
    /// Expiry of every set, in seconds; 0 for never.
    ttl: u32,
}

impl Conn {
    pub(crate) async fn connect(
        server: &str,
        timeout: Duration,
        value_size: usize,
        protocol: Protocol,
        ttl: u32,
    ) -> Result<Self, BenchError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(server)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(BenchError::Connect {
                    server: server.to_owned(),
                    source,
                });
            }
            Err(_) => {
                return Err(BenchError::ConnectTimeout {
                    server: server.to_owned(),
                    timeout,
                });
            }
        };
        // Small requests must leave at once; Nagle would add up to 40 ms to every batch.
        stream
            .set_nodelay(true)
            .map_err(|source| BenchError::Connect {
                server: server.to_owned(),
                source,
            })?;
        Ok(Self {
            stream,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: BytesMut::with_capacity(READ_CHUNK),
            expects: Vec::new(),
            timeout,
            max_buffered: value_size.saturating_mul(2).saturating_add(REPLY_SLACK),
            protocol,
            ttl,
        })
    }

    /// Requests queued for the next [`Conn::exchange`].
    pub(crate) fn queued(&self) -> usize {
        self.expects.len()
    }

    /// Queues `get <key>`, or `mg <key> k f v` (the key and flags come back so that the
    /// reply can be checked as fully as a `VALUE` line).
    pub(crate) fn queue_get(&mut self, key: Bytes) {
        let request = match self.protocol {
            Protocol::Text => Request::Get {
                keys: ascii::Keys::from_keys([&key]),
                cas: false,
            },
            Protocol::Meta => Request::MetaGet(MetaGet {
                key: key.clone(),
                base64: false,
                flags: [
                    MetaGetFlag::ReturnKey,
                    MetaGetFlag::ReturnClientFlags,
                    MetaGetFlag::ReturnValue,
                ]
                .into_iter()
                .collect(),
            }),
        };
        ascii::encode_request(&request, &mut self.write_buf);
        self.expects.push(Expect::Get { key });
    }

    /// Queues `set <key>` (or `ms <key>`) with the key's value of `value_size` bytes.
    pub(crate) fn queue_set(&mut self, key: Bytes, value_size: usize) {
        let value = value_for(&key, value_size);
        let request = match self.protocol {
            Protocol::Text => Request::Store {
                mode: StoreMode::Set,
                value,
                key: key.clone(),
                flags: FLAGS,
                exptime: i64::from(self.ttl),
                noreply: false,
            },
            Protocol::Meta => {
                let mut flags = vec![MetaSetFlag::ClientFlags(FLAGS)];
                if self.ttl > 0 {
                    flags.push(MetaSetFlag::Ttl(i64::from(self.ttl)));
                }
                Request::MetaSet(MetaSet {
                    key: key.clone(),
                    base64: false,
                    flags: flags.into(),
                    value,
                })
            }
        };
        ascii::encode_request(&request, &mut self.write_buf);
        self.expects.push(Expect::Set { key });
    }

    /// Sends the queued requests and checks their replies in order, calling `on_reply`
    /// with each request's kind, outcome and latency (from `origin`: when the batch was sent,
    /// or, when paced, when it was due).
    ///
    /// On `Err` the connection is unusable; requests for which `on_reply` was not called got
    /// no reply. Either way the queue is empty afterwards.
    pub(crate) async fn exchange<F>(
        &mut self,
        origin: Instant,
        mut on_reply: F,
    ) -> Result<(), String>
    where
        F: FnMut(Op, Outcome, Duration),
    {
        let Self {
            stream,
            read_buf,
            write_buf,
            expects,
            timeout,
            max_buffered,
            protocol: _,
            ttl: _,
        } = self;
        let timeout = *timeout;
        let max_buffered = *max_buffered;
        let (mut reader, mut writer) = stream.split();

        let write = async {
            match tokio::time::timeout(timeout, writer.write_all(write_buf)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("write failed: {e}")),
                Err(_) => Err(format!(
                    "server did not read our requests within {timeout:?}"
                )),
            }
        };

        let read = async {
            for expect in expects.drain(..) {
                let op = expect.op();
                let mut check = Check::new(expect);
                let deadline = tokio::time::Instant::now() + timeout;
                loop {
                    match ascii::decode_response(read_buf) {
                        Decoded::Done { item, consumed } => {
                            // Never trust `consumed` beyond what we hold.
                            read_buf.advance(consumed.min(read_buf.len()));
                            let reply =
                                item.map_err(|e| format!("reply is not memcached protocol: {e}"))?;
                            let (reply, then) = to_replies(reply);
                            let mut step = check.feed(reply);
                            if let (Step::More, Some(then)) = (&step, then) {
                                step = check.feed(then);
                            }
                            if let Step::Done(outcome) = step {
                                on_reply(op, outcome, origin.elapsed());
                                break;
                            }
                        }
                        Decoded::Incomplete => {
                            if read_buf.len() > max_buffered {
                                return Err(format!(
                                    "reply grew past {max_buffered} bytes without ending: {}",
                                    show(read_buf)
                                ));
                            }
                            read_buf.reserve(READ_CHUNK);
                            match tokio::time::timeout_at(deadline, reader.read_buf(read_buf)).await
                            {
                                Ok(Ok(0)) => {
                                    return Err("server closed the connection".to_owned());
                                }
                                Ok(Ok(_)) => {}
                                Ok(Err(e)) => return Err(format!("read failed: {e}")),
                                Err(_) => return Err(format!("no reply within {timeout:?}")),
                            }
                        }
                    }
                }
            }
            Ok(())
        };

        let result = tokio::try_join!(write, read).map(|_| ());
        write_buf.clear();
        expects.clear();
        result
    }
}

/// Reduces the codec's reply to what the bench checks, as text-protocol replies: a meta
/// hit (`VA`) reads as a `VALUE` and the `END` a text get would send after it, a meta
/// miss (`EN`) as that `END` alone, and `HD` as `STORED`.
fn to_replies(response: Response) -> (Reply, Option<Reply>) {
    let Response::Meta(meta) = response else {
        return (to_reply(response), None);
    };
    match meta.status {
        MetaStatus::Va => {
            let mut key = None;
            let mut flags = 0;
            for flag in meta.flags {
                match flag {
                    ReturnFlag::Key { key: k, .. } => key = Some(k),
                    ReturnFlag::ClientFlags(f) => flags = f,
                    _ => {}
                }
            }
            let Some(key) = key else {
                return (
                    Reply::Other("VA without the key asked for".to_owned()),
                    None,
                );
            };
            let data = meta.data.unwrap_or_default();
            (Reply::Value { key, flags, data }, Some(Reply::End))
        }
        MetaStatus::En => (Reply::End, None),
        MetaStatus::Hd => (Reply::Stored, None),
        _ => (to_reply(Response::Meta(meta)), None),
    }
}

/// Reduces a text-protocol reply (or an unexpected meta one) to what the bench checks.
fn to_reply(response: Response) -> Reply {
    match response {
        Response::Value {
            key, flags, data, ..
        } => Reply::Value { key, flags, data },
        Response::End => Reply::End,
        Response::Stored => Reply::Stored,
        Response::Error(error) => Reply::Refused(error.to_string()),
        other => {
            // Named as it looked on the wire, which is what an operator will search for.
            let mut wire = BytesMut::new();
            ascii::encode_response(&other, &mut wire);
            let line = wire[..].split(|&b| b == b'\r').next().unwrap_or_default();
            Reply::Other(String::from_utf8_lossy(line).into_owned())
        }
    }
}
