//! Executing classic text-protocol commands.

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use murakumo_protocol::ascii::{self, ErrorReply, Request, Response};
use murakumo_server::ops::{
    ArithOutcome, ArithRequest, DeleteOutcome, DeleteRequest, FetchOutcome, FetchRequest, Item,
    ItemRef, StoreMode, StoreOutcome, StoreRequest,
};
use murakumo_server::{Exptime, StoreError};

use crate::config::VERSION;
use crate::connection::{Connection, Disconnected, Flow};
use crate::stats::{StatsReply, bump, render};

/// The reply memcached gives when a store cannot take a value.
pub(crate) const TOO_LARGE: &str = ascii::VALUE_TOO_LARGE;

/// The reply memcached gives to incr/decr of a value that is not a number.
pub(crate) const NON_NUMERIC: &str = "cannot increment or decrement non-numeric value";

/// A retrieval's hit: read in place, or returned by the writer (after a touch, or a meta
/// get's vivify or recache win). Read hits are written out from the bytes they were read
/// from, which keeps a cached get free of allocations.
pub(crate) enum Found {
    Read(ItemRef),
    Fetched(Item),
}

impl Found {
    pub(crate) fn value(&self) -> &[u8] {
        match self {
            Self::Read(item) => item.value(),
            Self::Fetched(item) => &item.value,
        }
    }

    /// The value as `Bytes` sharing the stored record (see [`Connection::put_value`]).
    pub(crate) fn value_bytes(&self) -> Bytes {
        match self {
            Self::Read(item) => item.value_bytes(),
            Self::Fetched(item) => item.value.clone(),
        }
    }

    pub(crate) fn client_flags(&self) -> u32 {
        match self {
            Self::Read(item) => item.client_flags(),
            Self::Fetched(item) => item.client_flags,
        }
    }

    pub(crate) fn cas(&self) -> u64 {
        match self {
            Self::Read(item) => item.cas(),
            Self::Fetched(item) => item.cas,
        }
    }

    pub(crate) fn expires_at(&self) -> u32 {
        match self {
            Self::Read(item) => item.expires_at(),
            Self::Fetched(item) => item.expires_at,
        }
    }

    pub(crate) fn stale(&self) -> bool {
        match self {
            Self::Read(item) => item.stale(),
            Self::Fetched(item) => item.stale,
        }
    }

    pub(crate) fn win_sent(&self) -> bool {
        match self {
            Self::Read(item) => item.win_sent(),
            Self::Fetched(item) => item.win_sent,
        }
    }
}

impl Connection {
    pub(crate) async fn execute_ascii(&mut self, request: Request) -> Result<Flow, Disconnected> {
        match request {
            Request::Get { keys, cas } => self.get(keys, cas, None).await?,
            Request::GetAndTouch { exptime, keys, cas } => {
                self.get(keys, cas, Some(Exptime(exptime))).await?;
            }
            Request::Store {
                mode,
                key,
                flags,
                exptime,
                value,
                noreply,
            } => {
                let reply = self.store_text(mode, key, flags, exptime, value).await;
                self.reply(noreply, &reply);
            }
            Request::Arith {
                key,
                delta,
                incr,
                noreply,
            } => {
                let reply = self.arith_text(key, delta, incr).await;
                self.reply(noreply, &reply);
            }
            Request::Touch {
                key,
                exptime,
                noreply,
            } => {
                bump(&self.gateway.stats.cmd_touch);
                let reply = match self
                    .gateway
                    .store
                    .fetch(
                        self.gateway.namespace,
                        FetchRequest::touch(key.clone(), Exptime(exptime)),
                    )
                    .await
                {
                    Ok(FetchOutcome::Hit { item, .. }) => {
                        bump(&self.gateway.stats.touch_hits);
                        // memcached's log counts a touch as a fetch.
                        let size = Some(item.value.len());
                        self.gateway.watchers.fetched(&key, size, self.fd);
                        Response::Touched
                    }
                    Ok(FetchOutcome::Miss) => {
                        bump(&self.gateway.stats.touch_misses);
                        self.gateway.watchers.fetched(&key, None, self.fd);
                        Response::NotFound
                    }
                    Err(err) => store_error(&err),
                };
                self.reply(noreply, &reply);
            }
            Request::Delete { key, noreply } => {
                self.gateway.prefix_stats.record_delete(&key);
                let reply = match self.counted_delete(DeleteRequest::new(key)).await {
                    Ok(DeleteOutcome::Deleted) => Response::Deleted,
                    Ok(DeleteOutcome::NotFound | DeleteOutcome::Exists) => Response::NotFound,
                    Err(err) => store_error(&err),
                };
                self.reply(noreply, &reply);
            }
            Request::FlushAll { delay, noreply } => {
                let reply = match self.flush_all(delay).await {
                    Ok(()) => Response::Ok,
                    Err(err) => store_error(&err),
                };
                self.reply(noreply, &reply);
            }
            Request::Version => self.reply(false, &Response::Version(VERSION.to_owned())),
            Request::Verbosity { level, noreply } => {
                self.gateway.verbosity.store(level, Ordering::Relaxed);
                self.reply(noreply, &Response::Ok);
            }
            Request::Stats { group } => match render(&self.gateway, group.as_deref()) {
                StatsReply::Lines(lines) => {
                    for (name, value) in lines {
                        ascii::encode_response(&Response::Stat { name, value }, &mut self.out);
                    }
                    ascii::encode_response(&Response::End, &mut self.out);
                }
                StatsReply::Reset => self.out.extend_from_slice(b"RESET\r\n"),
                StatsReply::DetailToggled => {
                    ascii::encode_response(&Response::Ok, &mut self.out);
                }
                StatsReply::DetailDump(dump) => self.out.extend_from_slice(&dump),
                StatsReply::CacheDump { limit } => self.cachedump(limit).await?,
                StatsReply::BadArguments(message) => {
                    ascii::encode_response(
                        &Response::Error(ErrorReply::Client(Cow::Borrowed(message))),
                        &mut self.out,
                    );
                }
                StatsReply::Unknown => {
                    ascii::encode_response(&Response::Error(ErrorReply::Error), &mut self.out);
                }
            },
            Request::CacheMemlimit { megabytes, noreply } => {
                let reply = self.cache_memlimit(megabytes);
                if !noreply {
                    self.out.extend_from_slice(reply);
                }
            }
            Request::LruCrawler(request) => self.lru_crawler(request).await?,
            Request::Quit => return Ok(Flow::Close),
            Request::Watch(kinds) => return Ok(Flow::Watch(kinds)),
            Request::Shutdown { mode } => {
                if !self.gateway.config.enable_shutdown {
                    self.out
                        .extend_from_slice(b"ERROR: shutdown not enabled\r\n");
                } else if matches!(mode.as_deref(), None | Some(b"graceful")) {
                    // memcached's plain `shutdown` exits at once; a persistent node stops
                    // gracefully either way, so that every acknowledged write is synced.
                    tracing::info!("shutdown requested by a client");
                    self.gateway.shutdown_requested.notify_one();
                    return Ok(Flow::Close);
                } else {
                    ascii::encode_response(
                        &Response::Error(ErrorReply::Client(Cow::Borrowed(
                            "invalid shutdown mode",
                        ))),
                        &mut self.out,
                    );
                }
            }
            Request::MetaGet(request) => self.meta_get(request).await?,
            Request::MetaSet(request) => self.meta_set(request).await,
            Request::MetaDelete(request) => self.meta_delete(request).await,
            Request::MetaArith(request) => self.meta_arith(request).await,
            Request::MetaNoop => self.out.extend_from_slice(b"MN\r\n"),
            Request::MetaDebug { key, base64 } => self.meta_debug(key, base64),
        }
        Ok(Flow::Continue)
    }

    /// Appends a reply unless the client said `noreply` (which, as in memcached, silences
    /// errors too).
    fn reply(&mut self, noreply: bool, response: &Response) {
        if !noreply {
            ascii::encode_response(response, &mut self.out);
        }
    }

    /// get / gets / gat / gats: one `VALUE` per hit, in key order, then `END`; the reply
    /// is written out in pieces when it grows large.
    async fn get(
        &mut self,
        keys: ascii::Keys,
        cas: bool,
        touch: Option<Exptime>,
    ) -> Result<(), Disconnected> {
        let stats = &self.gateway.stats;
        if touch.is_some() {
            bump(&stats.cmd_touch);
        }
        for key in keys.iter() {
            bump(&self.gateway.stats.cmd_get);
            let found = match touch {
                None => self
                    .gateway
                    .store
                    .get_ref(self.gateway.namespace, key)
                    .map(|found| found.map(Found::Read)),
                Some(exptime) => self
                    .gateway
                    .store
                    .fetch(
                        self.gateway.namespace,
                        FetchRequest::touch(Bytes::copy_from_slice(key), exptime),
                    )
                    .await
                    .map(|outcome| match outcome {
                        FetchOutcome::Hit { item, .. } => Some(Found::Fetched(item)),
                        FetchOutcome::Miss => None,
                    }),
            };
            if let Ok(found) = &found {
                self.gateway.prefix_stats.record_get(key, found.is_some());
                let size = found.as_ref().map(|hit| hit.value().len());
                self.gateway.watchers.fetched(key, size, self.fd);
            }
            match found {
                Ok(Some(hit)) => {
                    bump(&self.gateway.stats.get_hits);
                    if touch.is_some() {
                        bump(&self.gateway.stats.touch_hits);
                    }
                    ascii::encode_value_head(
                        key,
                        hit.client_flags(),
                        cas.then_some(hit.cas()),
                        hit.value().len(),
                        &mut self.out,
                    );
                    self.put_value(hit.value(), || hit.value_bytes());
                    self.out.extend_from_slice(b"\r\n");
                }
                Ok(None) => {
                    bump(&self.gateway.stats.get_misses);
                    if touch.is_some() {
                        bump(&self.gateway.stats.touch_misses);
                    }
                }
                Err(err) => {
                    // Abandon the reply: a partial VALUE list followed by an error line is
                    // how memcached reports a failure mid-multiget.
                    ascii::encode_response(&store_error(&err), &mut self.out);
                    return Ok(());
                }
            }
            if self.output_full() {
                self.flush().await?;
            }
        }
        ascii::encode_response(&Response::End, &mut self.out);
        Ok(())
    }

    async fn store_text(
        &mut self,
        mode: ascii::StoreMode,
        key: Bytes,
        flags: u32,
        exptime: i64,
        value: Bytes,
    ) -> Response {
        let (mode, compare_cas) = match mode {
            ascii::StoreMode::Set => (StoreMode::Set, None),
            ascii::StoreMode::Add => (StoreMode::Add, None),
            ascii::StoreMode::Replace => (StoreMode::Replace, None),
            ascii::StoreMode::Append => (StoreMode::Append, None),
            ascii::StoreMode::Prepend => (StoreMode::Prepend, None),
            ascii::StoreMode::Cas(cas) => (StoreMode::Set, Some(cas)),
        };
        let request = StoreRequest {
            client_flags: flags,
            exptime: Exptime(exptime),
            mode,
            compare_cas,
            ..StoreRequest::set(key, value)
        };
        self.gateway.prefix_stats.record_set(&request.key);
        let outcome = self.counted_store(request).await;
        match outcome {
            Ok(StoreOutcome::Stored { .. }) => Response::Stored,
            Ok(StoreOutcome::NotStored) => Response::NotStored,
            Ok(StoreOutcome::Exists) => Response::Exists,
            Ok(StoreOutcome::NotFound) => Response::NotFound,
            Ok(StoreOutcome::TooLarge) => {
                Response::Error(ErrorReply::Server(Cow::Borrowed(TOO_LARGE)))
            }
            Err(err) => store_error(&err),
        }
    }

    async fn arith_text(&mut self, key: Bytes, delta: u64, incr: bool) -> Response {
        match self
            .counted_arith(ArithRequest::new(key, incr, delta))
            .await
        {
            Ok(ArithOutcome::Updated { value, .. }) => Response::Number(value),
            Ok(ArithOutcome::NotFound | ArithOutcome::Exists) => Response::NotFound,
            Ok(ArithOutcome::NonNumeric) => {
                Response::Error(ErrorReply::Client(Cow::Borrowed(NON_NUMERIC)))
            }
            Err(err) => store_error(&err),
        }
    }

    /// `flush_all [delay]`: the delay follows memcached's expiry rules (relative up to 30
    /// days, else an absolute time).
    pub(crate) async fn flush_all(&mut self, delay: i64) -> Result<(), StoreError> {
        bump(&self.gateway.stats.cmd_flush);
        let delay_secs = if delay <= 0 {
            0
        } else {
            let now = self.gateway.store.clock().now();
            Exptime(delay).resolve(now).saturating_sub(now)
        };
        self.gateway
            .store
            .flush_all(self.gateway.namespace, delay_secs)
            .await
    }
}

impl Connection {
    /// `cache_memlimit`: record the limit for the next start (see
    /// [`GatewayConfig::memory_limit_file`](crate::GatewayConfig::memory_limit_file)),
    /// and with memory storage apply it now as well, as memcached does.
    fn cache_memlimit(&mut self, megabytes: u64) -> &'static [u8] {
        if megabytes < crate::config::MIN_MEMORY_LIMIT_MB {
            return b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n";
        }
        let store = &self.gateway.store;
        if store.in_memory()
            && !usize::try_from(megabytes.saturating_mul(1024 * 1024))
                .is_ok_and(|bytes| store.set_memory_limit(bytes))
        {
            return b"MEMLIMIT_TOO_SMALL cannot set maxbytes below twice the item size limit\r\n";
        }
        let Some(file) = &self.gateway.config.memory_limit_file else {
            return b"SERVER_ERROR this node has no place to record a memory limit\r\n";
        };
        match crate::config::write_memory_limit(file, megabytes) {
            Ok(()) => {
                self.gateway
                    .requested_memory_limit_mb
                    .store(megabytes, Ordering::Relaxed);
                if self.gateway.store.in_memory() {
                    tracing::info!(megabytes, "cache_memlimit applied and recorded");
                } else {
                    tracing::info!(
                        megabytes,
                        "cache_memlimit recorded; it takes effect at the next start"
                    );
                }
                b"OK\r\n"
            }
            Err(err) => {
                tracing::warn!(error = %err, "cache_memlimit: cannot record the limit");
                b"SERVER_ERROR cannot record the memory limit\r\n"
            }
        }
    }
}

/// The reply to a store failure: the node is out of service, and says so.
pub(crate) fn store_error(err: &StoreError) -> Response {
    Response::Error(ErrorReply::Server(Cow::Owned(err.to_string())))
}
