//! Executing meta commands (`mg`, `ms`, `md`, `ma`, `me`).
//!
//! Return flags are echoed in the order the client asked for them, then `W`, `X`, `Z`, as
//! memcached does. Quiet mode (`q`) hides the "nominal" reply of each command: `EN` for
//! `mg`, `HD` for `ms`, `md` and `ma`; everything else is sent (memcached 1.6.18 sends
//! `NF` for a quiet `md` too).

use std::borrow::Cow;

use bytes::Bytes;
use murakumo_protocol::ascii::{
    self, ErrorReply, MetaArith, MetaArithFlag, MetaArithMode, MetaDebugResponse, MetaDelete,
    MetaDeleteFlag, MetaGet, MetaGetFlag, MetaResponse, MetaSet, MetaSetFlag, MetaSetMode,
    MetaStatus, Response, ReturnFlag,
};
use murakumo_server::expiry::remaining_ttl;
use murakumo_server::ops::{
    ArithOutcome, ArithRequest, DeleteOutcome, DeleteRequest, FetchOutcome, FetchRequest,
    StoreMode, StoreOutcome, StoreRequest,
};
use murakumo_server::{AccessInfo, Exptime, StoreError};

use crate::ascii::{Found, NON_NUMERIC, TOO_LARGE, store_error};
use crate::connection::{Connection, Disconnected};
use crate::stats::bump;

/// A meta get hit, with what the reply needs beyond the item.
struct Hit {
    item: Found,
    won: bool,
    access: AccessInfo,
    /// Expiry before this request's `T`, for a `t` that comes before it.
    expires_before: u32,
}

impl Connection {
    pub(crate) async fn meta_get(&mut self, mut request: MetaGet) -> Result<(), Disconnected> {
        bump(&self.gateway.stats.cmd_get);
        // The key goes in only if the writer is needed (see `meta_lookup`).
        let mut fetch = FetchRequest {
            key: Bytes::new(),
            touch: None,
            vivify: None,
            recache_below: None,
            new_cas: None,
        };
        let mut bump_access = true;
        for flag in &request.flags {
            match flag {
                MetaGetFlag::Touch(ttl) => fetch.touch = Some(Exptime(*ttl)),
                MetaGetFlag::Vivify(ttl) => fetch.vivify = Some(Exptime(*ttl)),
                MetaGetFlag::Recache(ttl) => {
                    fetch.recache_below = Some(u32::try_from(*ttl).unwrap_or(0));
                }
                MetaGetFlag::NewCas(cas) => fetch.new_cas = Some(*cas),
                MetaGetFlag::NoBump => bump_access = false,
                _ => {}
            }
        }
        let hit = match self.meta_lookup(&request.key, fetch, bump_access).await {
            Ok(hit) => hit,
            Err(err) => {
                ascii::encode_response(&store_error(&err), &mut self.out);
                return Ok(());
            }
        };
        let stats = &self.gateway.stats;
        let quiet = request
            .flags
            .iter()
            .any(|f| matches!(f, MetaGetFlag::Quiet));
        let Some(Hit {
            item,
            won,
            access,
            expires_before,
        }) = hit
        else {
            bump(&stats.get_misses);
            self.gateway.watchers.fetched(&request.key, None, self.fd);
            if !quiet {
                let mut flags = std::mem::take(&mut self.meta_flags);
                for flag in &request.flags {
                    match flag {
                        MetaGetFlag::Opaque(opaque) => {
                            flags.push(ReturnFlag::Opaque(opaque.clone()));
                        }
                        MetaGetFlag::ReturnKey => flags.push(ReturnFlag::Key {
                            key: std::mem::take(&mut request.key),
                            base64: request.base64,
                        }),
                        _ => {}
                    }
                }
                ascii::encode_meta_reply(MetaStatus::En, &flags, None, &mut self.out);
                self.keep_meta_flags(flags);
            }
            return Ok(());
        };
        bump(&stats.get_hits);
        self.gateway
            .watchers
            .fetched(&request.key, Some(item.value().len()), self.fd);
        let now = self.gateway.store.clock().now();
        let wants_value = request
            .flags
            .iter()
            .any(|f| matches!(f, MetaGetFlag::ReturnValue));
        // The reply's flags go into a list the connection keeps, so that answering a get
        // allocates nothing for them.
        let mut flags = std::mem::take(&mut self.meta_flags);
        // memcached applies flags in order: a `t` before `T` reports the TTL before the touch.
        let mut expires_at = expires_before;
        for flag in &request.flags {
            flags.push(match flag {
                MetaGetFlag::Touch(_) => {
                    expires_at = item.expires_at();
                    continue;
                }
                MetaGetFlag::ReturnCas => ReturnFlag::Cas(item.cas()),
                MetaGetFlag::ReturnClientFlags => ReturnFlag::ClientFlags(item.client_flags()),
                MetaGetFlag::ReturnHit => ReturnFlag::Hit(access.fetched_before),
                // Moved, not cloned: the first clone of a key parsed from a request
                // allocates (its buffer becomes shared). The parser refuses a second `k`.
                MetaGetFlag::ReturnKey => ReturnFlag::Key {
                    key: std::mem::take(&mut request.key),
                    base64: request.base64,
                },
                MetaGetFlag::ReturnLastAccess => {
                    ReturnFlag::LastAccess(u64::from(now.saturating_sub(access.last_access)))
                }
                MetaGetFlag::Opaque(opaque) => ReturnFlag::Opaque(opaque.clone()),
                MetaGetFlag::ReturnSize => ReturnFlag::Size(item.value().len() as u64),
                MetaGetFlag::ReturnTtl => ReturnFlag::Ttl(remaining_ttl(expires_at, now)),
                _ => continue,
            });
        }
        push_lease_flags(&mut flags, item.stale(), item.win_sent(), won);
        if wants_value {
            let value = item.value();
            ascii::encode_meta_reply_head(MetaStatus::Va, &flags, value.len(), &mut self.out);
            self.put_value(value, || item.value_bytes());
            self.out.extend_from_slice(b"\r\n");
        } else {
            ascii::encode_meta_reply(MetaStatus::Hd, &flags, None, &mut self.out);
        }
        self.keep_meta_flags(flags);
        if self.output_full() {
            self.flush().await?;
        }
        Ok(())
    }

    /// Finds the item for `mg`. A plain read is served on this thread; anything that may
    /// change the item (touch, vivify, recache, or a stale item whose win has not been
    /// handed out yet) goes through the writer so exactly one client wins.
    /// Keeps a reply's flag list for the next reply: emptied, so that it holds no key or
    /// opaque token between requests, but with its capacity.
    fn keep_meta_flags(&mut self, mut flags: Vec<ReturnFlag>) {
        flags.clear();
        self.meta_flags = flags;
    }

    async fn meta_lookup(
        &mut self,
        key: &Bytes,
        mut fetch: FetchRequest,
        bump_access: bool,
    ) -> Result<Option<Hit>, StoreError> {
        let store = &self.gateway.store;
        let ns = self.gateway.namespace;
        let modifies =
            fetch.touch.is_some() || fetch.vivify.is_some() || fetch.recache_below.is_some();
        if !modifies {
            match store.get_ref_observed(ns, key, bump_access)? {
                None => return Ok(None),
                Some((item, access)) if !item.stale() || item.win_sent() => {
                    let expires_before = item.expires_at();
                    return Ok(Some(Hit {
                        item: Found::Read(item),
                        won: false,
                        access,
                        expires_before,
                    }));
                }
                Some(_) => {}
            }
        }
        // Cloned only here: the first clone of a key parsed from the request allocates
        // (its buffer becomes shared), which a plain read never needs.
        fetch.key = key.clone();
        match store.fetch(ns, fetch).await? {
            FetchOutcome::Miss => Ok(None),
            FetchOutcome::Hit {
                item,
                won,
                expires_before,
                ..
            } => {
                let access = store.observe_fetch(ns, key, &item, bump_access);
                Ok(Some(Hit {
                    item: Found::Fetched(item),
                    won,
                    access,
                    expires_before,
                }))
            }
        }
    }

    pub(crate) async fn meta_set(&mut self, mut request: MetaSet) {
        let mode = match request.mode() {
            MetaSetMode::Set => StoreMode::Set,
            MetaSetMode::Add => StoreMode::Add,
            MetaSetMode::Replace => StoreMode::Replace,
            MetaSetMode::Append => StoreMode::Append,
            MetaSetMode::Prepend => StoreMode::Prepend,
        };
        // Key and value move into the write, not cloned (see `prepared_key_flag`).
        let mut key_flag = prepared_key_flag(
            &request.flags,
            &MetaSetFlag::ReturnKey,
            &request.key,
            request.base64,
        );
        let value_len = request.value.len();
        let mut store = StoreRequest {
            mode,
            ..StoreRequest::set(
                std::mem::take(&mut request.key),
                std::mem::take(&mut request.value),
            )
        };
        for flag in &request.flags {
            match flag {
                MetaSetFlag::CompareCas(cas) => store.compare_cas = Some(*cas),
                MetaSetFlag::NewCas(cas) => store.new_cas = Some(*cas),
                MetaSetFlag::ClientFlags(flags) => store.client_flags = *flags,
                MetaSetFlag::Invalidate => store.invalidate = true,
                MetaSetFlag::Ttl(ttl) => store.exptime = Exptime(*ttl),
                MetaSetFlag::Vivify(ttl) => store.vivify = Some(Exptime(*ttl)),
                _ => {}
            }
        }
        let outcome = self.counted_store(store).await;
        let (status, cas) = match outcome {
            Ok(StoreOutcome::Stored { cas }) => (MetaStatus::Hd, cas),
            Ok(StoreOutcome::NotStored) => (MetaStatus::Ns, 0),
            Ok(StoreOutcome::Exists) => (MetaStatus::Ex, 0),
            Ok(StoreOutcome::NotFound) => (MetaStatus::Nf, 0),
            Ok(StoreOutcome::TooLarge) => {
                return self.error(ErrorReply::Server(Cow::Borrowed(TOO_LARGE)));
            }
            Err(err) => return ascii::encode_response(&store_error(&err), &mut self.out),
        };
        if status == MetaStatus::Hd && request.is_quiet() {
            return;
        }
        let mut flags = std::mem::take(&mut self.meta_flags);
        flags.extend(request.flags.iter().filter_map(|flag| match flag {
            MetaSetFlag::ReturnCas => Some(ReturnFlag::Cas(cas)),
            MetaSetFlag::ReturnKey => key_flag.take(),
            MetaSetFlag::Opaque(opaque) => Some(ReturnFlag::Opaque(opaque.clone())),
            MetaSetFlag::ReturnSize => Some(ReturnFlag::Size(value_len as u64)),
            _ => None,
        }));
        ascii::encode_meta_reply(status, &flags, None, &mut self.out);
        self.keep_meta_flags(flags);
    }

    pub(crate) async fn meta_delete(&mut self, mut request: MetaDelete) {
        let mut key_flag = prepared_key_flag(
            &request.flags,
            &MetaDeleteFlag::ReturnKey,
            &request.key,
            request.base64,
        );
        let mut delete = DeleteRequest::new(std::mem::take(&mut request.key));
        for flag in &request.flags {
            match flag {
                MetaDeleteFlag::CompareCas(cas) => delete.compare_cas = Some(*cas),
                MetaDeleteFlag::NewCas(cas) => delete.new_cas = Some(*cas),
                MetaDeleteFlag::Invalidate => delete.invalidate = true,
                MetaDeleteFlag::Ttl(ttl) => delete.exptime = Some(Exptime(*ttl)),
                MetaDeleteFlag::RemoveValue => delete.remove_value = true,
                _ => {}
            }
        }
        let status = match self.counted_delete(delete).await {
            Ok(DeleteOutcome::Deleted) => MetaStatus::Hd,
            Ok(DeleteOutcome::NotFound) => MetaStatus::Nf,
            Ok(DeleteOutcome::Exists) => MetaStatus::Ex,
            Err(err) => return ascii::encode_response(&store_error(&err), &mut self.out),
        };
        if status == MetaStatus::Hd && request.is_quiet() {
            return;
        }
        let mut flags = std::mem::take(&mut self.meta_flags);
        flags.extend(request.flags.iter().filter_map(|flag| match flag {
            MetaDeleteFlag::ReturnKey => key_flag.take(),
            MetaDeleteFlag::Opaque(opaque) => Some(ReturnFlag::Opaque(opaque.clone())),
            _ => None,
        }));
        ascii::encode_meta_reply(status, &flags, None, &mut self.out);
        self.keep_meta_flags(flags);
    }

    pub(crate) async fn meta_arith(&mut self, mut request: MetaArith) {
        let incr = request.mode() == MetaArithMode::Incr;
        let mut key_flag = prepared_key_flag(
            &request.flags,
            &MetaArithFlag::ReturnKey,
            &request.key,
            request.base64,
        );
        let mut arith = ArithRequest::new(std::mem::take(&mut request.key), incr, request.delta());
        let mut vivify_ttl = None;
        let mut initial = 0;
        for flag in &request.flags {
            match flag {
                MetaArithFlag::CompareCas(cas) => arith.compare_cas = Some(*cas),
                MetaArithFlag::NewCas(cas) => arith.new_cas = Some(*cas),
                MetaArithFlag::Vivify(ttl) => vivify_ttl = Some(Exptime(*ttl)),
                MetaArithFlag::Initial(value) => initial = *value,
                MetaArithFlag::Ttl(ttl) => arith.exptime = Some(Exptime(*ttl)),
                _ => {}
            }
        }
        arith.vivify = vivify_ttl.map(|ttl| (initial, ttl));
        let (status, updated) = match self.counted_arith(arith).await {
            Ok(ArithOutcome::Updated { value, item }) => (MetaStatus::Hd, Some((value, item))),
            Ok(ArithOutcome::NotFound) => (MetaStatus::Nf, None),
            Ok(ArithOutcome::Exists) => (MetaStatus::Ex, None),
            Ok(ArithOutcome::NonNumeric) => {
                return self.error(ErrorReply::Client(Cow::Borrowed(NON_NUMERIC)));
            }
            Err(err) => return ascii::encode_response(&store_error(&err), &mut self.out),
        };
        if status == MetaStatus::Hd && request.is_quiet() {
            return;
        }
        let wants_value = request
            .flags
            .iter()
            .any(|f| matches!(f, MetaArithFlag::ReturnValue));
        let now = self.gateway.store.clock().now();
        let (status, data) = match (&updated, wants_value) {
            (Some((value, _)), true) => (MetaStatus::Va, Some(value.to_string())),
            _ => (status, None),
        };
        let item = updated.map(|(_, item)| item);
        let mut flags = std::mem::take(&mut self.meta_flags);
        flags.extend(request.flags.iter().filter_map(|flag| match (flag, &item) {
            (MetaArithFlag::ReturnTtl, Some(item)) => {
                Some(ReturnFlag::Ttl(remaining_ttl(item.expires_at, now)))
            }
            (MetaArithFlag::ReturnCas, Some(item)) => Some(ReturnFlag::Cas(item.cas)),
            (MetaArithFlag::ReturnKey, _) => key_flag.take(),
            (MetaArithFlag::Opaque(opaque), _) => Some(ReturnFlag::Opaque(opaque.clone())),
            _ => None,
        }));
        ascii::encode_meta_reply(
            status,
            &flags,
            data.as_deref().map(str::as_bytes),
            &mut self.out,
        );
        self.keep_meta_flags(flags);
    }

    /// `me <key>`: the item's metadata in memcached's `name=value` form.
    pub(crate) fn meta_debug(&mut self, key: Bytes, base64: bool) {
        let store = &self.gateway.store;
        let found = match store.get_observed(self.gateway.namespace, &key, false) {
            Ok(found) => found,
            Err(err) => return ascii::encode_response(&store_error(&err), &mut self.out),
        };
        let Some((item, access)) = found else {
            return ascii::encode_response(
                &Response::Meta(MetaResponse::new(MetaStatus::En)),
                &mut self.out,
            );
        };
        let now = store.clock().now();
        let printed_key = if base64 {
            ascii::base64_encode(&key)
        } else {
            key
        };
        let fields = vec![
            (
                "exp".to_owned(),
                remaining_ttl(item.expires_at, now).to_string(),
            ),
            (
                "la".to_owned(),
                now.saturating_sub(access.last_access).to_string(),
            ),
            ("cas".to_owned(), item.cas.to_string()),
            (
                "fetch".to_owned(),
                if access.fetched_before { "yes" } else { "no" }.to_owned(),
            ),
            ("cls".to_owned(), "1".to_owned()),
            ("size".to_owned(), item.value.len().to_string()),
        ];
        ascii::encode_response(
            &Response::MetaDebug(MetaDebugResponse {
                key: printed_key,
                fields,
            }),
            &mut self.out,
        );
    }

    fn error(&mut self, reply: ErrorReply) {
        ascii::encode_response(&Response::Error(reply), &mut self.out);
    }
}

/// The `k` return flag of a meta command's reply, if its flags ask for one (`asked`),
/// prepared before the command's key moves into its request to the store. The key is
/// cloned only then: the first clone of a key as parsed from a request allocates (its
/// buffer becomes shared), which every `ms`, `md` and `ma` paid before. The parser
/// refuses a repeated flag, so the reply takes it once.
fn prepared_key_flag<F: PartialEq>(
    flags: &[F],
    asked: &F,
    key: &Bytes,
    base64: bool,
) -> Option<ReturnFlag> {
    flags.contains(asked).then(|| ReturnFlag::Key {
        key: key.clone(),
        base64,
    })
}

/// `W` (this client won the recache), `X` (stale), `Z` (someone else already won).
fn push_lease_flags(flags: &mut Vec<ReturnFlag>, stale: bool, win_sent: bool, won: bool) {
    if won {
        flags.push(ReturnFlag::Won);
    }
    if stale {
        flags.push(ReturnFlag::Stale);
    }
    if win_sent && !won {
        flags.push(ReturnFlag::AlreadyWon);
    }
}
