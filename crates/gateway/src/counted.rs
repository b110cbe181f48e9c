//! Store operations with their memcached counters.
//!
//! memcached counts the outcome of each command the same way whichever protocol carried
//! it (`cmd_set`, `cas_hits`, `incr_misses`, …). The text, meta and binary executors all
//! call these wrappers, so each counter is kept in exactly one place.

use murakumo_protocol::ascii::WatchKinds;
use murakumo_server::StoreError;
use murakumo_server::ops::{
    ArithOutcome, ArithRequest, DeleteOutcome, DeleteRequest, StoreMode, StoreOutcome, StoreRequest,
};

use crate::connection::Connection;
use crate::stats::bump;
use crate::watch::StoreStatus;

impl Connection {
    /// A storage command: counts `cmd_set`, and `cas_*` when it compares a CAS.
    pub(crate) async fn counted_store(
        &self,
        request: StoreRequest,
    ) -> Result<StoreOutcome, StoreError> {
        let stats = &self.gateway.stats;
        bump(&stats.cmd_set);
        let compares = request.compare_cas.is_some();
        // What `watch mutations` says of it, kept before the request moves to the store.
        let watched = self.gateway.watchers.want(WatchKinds::MUTATIONS).then(|| {
            let now = self.gateway.store.clock().now();
            let expires_at = request.exptime.resolve(now);
            let ttl = if expires_at == 0 {
                0
            } else {
                expires_at.saturating_sub(now)
            };
            let command = match (compares, request.mode) {
                (true, _) => "cas",
                (false, StoreMode::Set) => "set",
                (false, StoreMode::Add) => "add",
                (false, StoreMode::Replace) => "replace",
                (false, StoreMode::Append) => "append",
                (false, StoreMode::Prepend) => "prepend",
            };
            (request.key.clone(), command, ttl, request.value.len())
        });
        let outcome = self
            .gateway
            .store
            .store(self.gateway.namespace, request)
            .await;
        if let (Some((key, command, ttl, size)), Ok(result)) = (watched, &outcome) {
            let status = match result {
                StoreOutcome::Stored { .. } => StoreStatus::Stored,
                StoreOutcome::NotStored => StoreStatus::NotStored,
                StoreOutcome::Exists => StoreStatus::Exists,
                StoreOutcome::NotFound => StoreStatus::NotFound,
                StoreOutcome::TooLarge => StoreStatus::TooLarge,
            };
            self.gateway
                .watchers
                .stored(&key, command, status, ttl, size, self.fd);
        }
        if matches!(outcome, Ok(StoreOutcome::TooLarge)) {
            bump(&stats.store_too_large);
        }
        if compares {
            match outcome {
                Ok(StoreOutcome::Stored { .. }) => bump(&stats.cas_hits),
                Ok(StoreOutcome::Exists) => bump(&stats.cas_badval),
                Ok(StoreOutcome::NotFound) => bump(&stats.cas_misses),
                _ => {}
            }
        }
        outcome
    }

    /// incr / decr: counts `incr_*` or `decr_*`.
    pub(crate) async fn counted_arith(
        &self,
        request: ArithRequest,
    ) -> Result<ArithOutcome, StoreError> {
        let stats = &self.gateway.stats;
        let (hits, misses) = if request.incr {
            (&stats.incr_hits, &stats.incr_misses)
        } else {
            (&stats.decr_hits, &stats.decr_misses)
        };
        let outcome = self
            .gateway
            .store
            .arith(self.gateway.namespace, request)
            .await;
        match outcome {
            Ok(ArithOutcome::Updated { .. }) => bump(hits),
            Ok(ArithOutcome::NotFound) => bump(misses),
            _ => {}
        }
        outcome
    }

    /// delete: counts `delete_*`.
    pub(crate) async fn counted_delete(
        &self,
        request: DeleteRequest,
    ) -> Result<DeleteOutcome, StoreError> {
        let stats = &self.gateway.stats;
        let outcome = self
            .gateway
            .store
            .delete(self.gateway.namespace, request)
            .await;
        match outcome {
            Ok(DeleteOutcome::Deleted) => bump(&stats.delete_hits),
            Ok(DeleteOutcome::NotFound) => bump(&stats.delete_misses),
            _ => {}
        }
        outcome
    }
}
