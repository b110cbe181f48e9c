//! Executing binary-protocol commands.

use bytes::Bytes;
use murakumo_protocol::binary::{self, Command, Request, RequestHeader, Response, Status};
use murakumo_server::ops::{
    ArithOutcome, ArithRequest, DeleteOutcome, DeleteRequest, FetchOutcome, FetchRequest,
    StoreMode, StoreOutcome, StoreRequest,
};
use murakumo_server::{Exptime, StoreError};

use crate::config::VERSION;
use crate::connection::{Connection, Disconnected, Flow};
use crate::stats::{StatsReply, bump, render};

/// Incr/decr expiration meaning "do not create a missing counter".
const NO_VIVIFY: u32 = 0xffff_ffff;

impl Connection {
    pub(crate) async fn execute_binary(&mut self, request: Request) -> Result<Flow, Disconnected> {
        let Request { header, command } = request;
        let sasl_command = matches!(
            command,
            Command::SaslListMechs | Command::SaslAuth { .. } | Command::SaslStep { .. }
        );
        if !self.authenticated && !sasl_command && !matches!(command, Command::Quit { .. }) {
            self.send(&Response::for_request(&header, Status::AuthError));
            return Ok(Flow::Continue);
        }
        let quiet = command.is_quiet();
        let response = match command {
            Command::Get {
                key, return_key, ..
            } => {
                bump(&self.gateway.stats.cmd_get);
                let found = self.gateway.store.get(self.gateway.namespace, &key);
                self.item_reply(&header, found, key, return_key, quiet, false)
            }
            Command::GetAndTouch {
                key,
                exptime,
                return_key,
                ..
            } => {
                bump(&self.gateway.stats.cmd_get);
                bump(&self.gateway.stats.cmd_touch);
                let found = self.touch(&key, exptime).await;
                self.item_reply(&header, found, key, return_key, quiet, false)
            }
            Command::Touch { key, exptime } => {
                bump(&self.gateway.stats.cmd_touch);
                let found = self.touch(&key, exptime).await;
                match &found {
                    Ok(Some(_)) => bump(&self.gateway.stats.touch_hits),
                    Ok(None) => bump(&self.gateway.stats.touch_misses),
                    Err(_) => {}
                }
                self.item_reply(&header, found, key, false, false, true)
            }
            Command::Set {
                key,
                flags,
                exptime,
                value,
                ..
            } => {
                self.store(&header, StoreMode::Set, key, value, flags, exptime, quiet)
                    .await
            }
            Command::Add {
                key,
                flags,
                exptime,
                value,
                ..
            } => {
                self.store(&header, StoreMode::Add, key, value, flags, exptime, quiet)
                    .await
            }
            Command::Replace {
                key,
                flags,
                exptime,
                value,
                ..
            } => {
                self.store(
                    &header,
                    StoreMode::Replace,
                    key,
                    value,
                    flags,
                    exptime,
                    quiet,
                )
                .await
            }
            Command::Append { key, value, .. } => {
                self.store(&header, StoreMode::Append, key, value, 0, 0, quiet)
                    .await
            }
            Command::Prepend { key, value, .. } => {
                self.store(&header, StoreMode::Prepend, key, value, 0, 0, quiet)
                    .await
            }
            Command::Delete { key, .. } => {
                self.gateway.prefix_stats.record_delete(&key);
                let request = DeleteRequest {
                    compare_cas: (header.cas != 0).then_some(header.cas),
                    ..DeleteRequest::new(key)
                };
                match self.counted_delete(request).await {
                    Ok(DeleteOutcome::Deleted) => (!quiet).then(|| Response::ok(&header)),
                    Ok(DeleteOutcome::NotFound) => {
                        Some(Response::for_request(&header, Status::KeyNotFound))
                    }
                    Ok(DeleteOutcome::Exists) => {
                        Some(Response::for_request(&header, Status::KeyExists))
                    }
                    Err(err) => Some(internal_error(&header, &err)),
                }
            }
            Command::Increment {
                key,
                delta,
                initial,
                exptime,
                ..
            } => {
                self.arith(&header, key, true, delta, initial, exptime, quiet)
                    .await
            }
            Command::Decrement {
                key,
                delta,
                initial,
                exptime,
                ..
            } => {
                self.arith(&header, key, false, delta, initial, exptime, quiet)
                    .await
            }
            Command::Quit { quiet } => {
                if !quiet {
                    self.send(&Response::ok(&header));
                }
                return Ok(Flow::Close);
            }
            Command::Flush { exptime, .. } => {
                match self.flush_all(i64::from(exptime.unwrap_or(0))).await {
                    Ok(()) => (!quiet).then(|| Response::ok(&header)),
                    Err(err) => Some(internal_error(&header, &err)),
                }
            }
            // memcached 1.6 ignores the level; acknowledging is all a client needs.
            Command::Noop | Command::Verbosity { .. } => Some(Response::ok(&header)),
            Command::Version => Some(Response::with_body(&header, VERSION)),
            Command::Stat { group } => {
                let group = (!group.is_empty()).then_some(&group[..]);
                match render(&self.gateway, group) {
                    StatsReply::Lines(lines) => {
                        for (name, value) in lines {
                            self.send(&Response::stat(&header, name, value));
                        }
                        Some(Response::ok(&header))
                    }
                    StatsReply::Reset | StatsReply::DetailToggled => Some(Response::ok(&header)),
                    // memcached sends the text dump as the value of one `detailed` stat.
                    StatsReply::DetailDump(dump) => {
                        self.send(&Response::stat(&header, "detailed", dump));
                        Some(Response::ok(&header))
                    }
                    // memcached serves cachedump over the text protocol only.
                    StatsReply::CacheDump { .. }
                    | StatsReply::Unknown
                    | StatsReply::BadArguments(_) => {
                        Some(Response::for_request(&header, Status::KeyNotFound))
                    }
                }
            }
            Command::SaslListMechs => Some(match self.gateway.config.sasl_users {
                Some(_) => Response::with_body(&header, "PLAIN"),
                None => Response::for_request(&header, Status::UnknownCommand),
            }),
            Command::SaslAuth { mechanism, data } | Command::SaslStep { mechanism, data } => {
                Some(self.sasl(&header, &mechanism, &data))
            }
            Command::Unknown { .. } => Some(Response::for_request(&header, Status::UnknownCommand)),
        };
        if let Some(response) = response {
            self.send(&response);
        }
        Ok(Flow::Continue)
    }

    fn send(&mut self, response: &Response) {
        let value_len = binary::encode_response_head(response, response.value.len(), &mut self.out);
        let value = &response.value[..value_len];
        self.put_value(value, || response.value.slice(..value_len));
    }

    async fn touch(
        &mut self,
        key: &Bytes,
        exptime: u32,
    ) -> Result<Option<murakumo_server::ops::Item>, StoreError> {
        let request = FetchRequest::touch(key.clone(), Exptime(i64::from(exptime)));
        Ok(
            match self
                .gateway
                .store
                .fetch(self.gateway.namespace, request)
                .await?
            {
                FetchOutcome::Hit { item, .. } => Some(item),
                FetchOutcome::Miss => None,
            },
        )
    }

    /// The reply to a get, get-and-touch or touch. `touch_only` replies carry the flags
    /// but no value, as memcached's do.
    fn item_reply(
        &self,
        header: &RequestHeader,
        found: Result<Option<murakumo_server::ops::Item>, StoreError>,
        key: Bytes,
        return_key: bool,
        quiet: bool,
        touch_only: bool,
    ) -> Option<Response> {
        let stats = &self.gateway.stats;
        if let Ok(found) = &found {
            // Unlike the text protocol's, memcached counts a binary touch as a get.
            self.gateway.prefix_stats.record_get(&key, found.is_some());
            let size = found.as_ref().map(|item| item.value.len());
            self.gateway.watchers.fetched(&key, size, self.fd);
        }
        match found {
            Ok(Some(item)) => {
                if !touch_only {
                    bump(&stats.get_hits);
                }
                let value = if touch_only { Bytes::new() } else { item.value };
                Some(Response::item(
                    header,
                    item.client_flags,
                    item.cas,
                    return_key.then_some(key),
                    value,
                ))
            }
            Ok(None) => {
                if !touch_only {
                    bump(&stats.get_misses);
                }
                (!quiet).then(|| Response::miss(header, return_key.then_some(key)))
            }
            Err(err) => Some(internal_error(header, &err)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn store(
        &mut self,
        header: &RequestHeader,
        mode: StoreMode,
        key: Bytes,
        value: Bytes,
        client_flags: u32,
        exptime: u32,
        quiet: bool,
    ) -> Option<Response> {
        let request = StoreRequest {
            client_flags,
            exptime: Exptime(i64::from(exptime)),
            mode,
            compare_cas: (header.cas != 0).then_some(header.cas),
            ..StoreRequest::set(key, value)
        };
        self.gateway.prefix_stats.record_set(&request.key);
        let outcome = self.counted_store(request).await;
        let status = match outcome {
            Ok(StoreOutcome::Stored { cas }) => {
                return (!quiet).then(|| Response::ok(header).with_cas(cas));
            }
            // memcached reports a failed add as "exists" and a failed replace as "not
            // found"; append and prepend say "not stored".
            Ok(StoreOutcome::NotStored) => match mode {
                StoreMode::Add => Status::KeyExists,
                StoreMode::Replace => Status::KeyNotFound,
                _ => Status::ItemNotStored,
            },
            Ok(StoreOutcome::Exists) => Status::KeyExists,
            Ok(StoreOutcome::NotFound) => Status::KeyNotFound,
            Ok(StoreOutcome::TooLarge) => Status::ValueTooLarge,
            Err(err) => return Some(internal_error(header, &err)),
        };
        Some(Response::for_request(header, status))
    }

    #[allow(clippy::too_many_arguments)]
    async fn arith(
        &mut self,
        header: &RequestHeader,
        key: Bytes,
        incr: bool,
        delta: u64,
        initial: u64,
        exptime: u32,
        quiet: bool,
    ) -> Option<Response> {
        let request = ArithRequest {
            vivify: (exptime != NO_VIVIFY).then_some((initial, Exptime(i64::from(exptime)))),
            compare_cas: (header.cas != 0).then_some(header.cas),
            ..ArithRequest::new(key, incr, delta)
        };
        let status = match self.counted_arith(request).await {
            Ok(ArithOutcome::Updated { value, item }) => {
                return (!quiet).then(|| Response::counter(header, value, item.cas));
            }
            Ok(ArithOutcome::NotFound) => Status::KeyNotFound,
            Ok(ArithOutcome::Exists) => Status::KeyExists,
            Ok(ArithOutcome::NonNumeric) => Status::NonNumeric,
            Err(err) => return Some(internal_error(header, &err)),
        };
        Some(Response::for_request(header, status))
    }

    /// SASL PLAIN against the configured users. Without SASL configured the commands are
    /// unknown, as in memcached without `-S`.
    fn sasl(&mut self, header: &RequestHeader, mechanism: &[u8], data: &[u8]) -> Response {
        let Some(users) = &self.gateway.config.sasl_users else {
            return Response::for_request(header, Status::UnknownCommand);
        };
        bump(&self.gateway.stats.auth_cmds);
        let accepted = mechanism == b"PLAIN"
            && binary::parse_sasl_plain(data).is_some_and(|(_, user, password)| {
                std::str::from_utf8(user)
                    .ok()
                    .and_then(|user| users.get(user))
                    .is_some_and(|expected| expected.as_bytes() == password)
            });
        if accepted {
            self.authenticated = true;
            Response::with_body(header, "Authenticated")
        } else {
            bump(&self.gateway.stats.auth_errors);
            Response::for_request(header, Status::AuthError)
        }
    }
}

fn internal_error(header: &RequestHeader, err: &StoreError) -> Response {
    Response::for_request(header, Status::InternalError).with_value(err.to_string())
}
