//! `lru_crawler`: `crawl`, the crawler's switches and knobs (`enable`, `disable`, `sleep`,
//! `tocrawl`, which drive the store's background sweep), and the two key listings:
//! `lru_crawler metadump` and `stats cachedump`.
//!
//! A listing walks the store a chunk of record headers at a time (`Store::scan_items`),
//! on the connection's task. Between chunks the task yields, so the other connections
//! of its thread are served however fast this client reads, and the reply is written out
//! whenever it passes the output limit, so a listing of any size holds bounded memory.

use std::time::Duration;

use bytes::BytesMut;
use murakumo_protocol::ascii::{
    self, BAD_CLASS, CrawlTarget, CrawlerRequest, MetadumpEntry, Response,
};
use murakumo_server::ops::{ItemCursor, ItemSummary};

use crate::ascii::store_error;
use crate::connection::{Connection, Disconnected};
use crate::stats::{ITEM_CLASS, SCAN_CHUNK};

impl Connection {
    /// `lru_crawler crawl|metadump <classes>`. Every item is in class 1, so naming other
    /// (valid) classes finds nothing; naming one that cannot exist is `BADCLASS`. The
    /// switches and knobs answer as memcached's do, and act on the background sweep.
    pub(crate) async fn lru_crawler(
        &mut self,
        request: CrawlerRequest,
    ) -> Result<(), Disconnected> {
        let store = &self.gateway.store;
        match request {
            CrawlerRequest::Crawl(_) | CrawlerRequest::Metadump(_) if !store.sweep_enabled() => {
                // memcached refuses both while its crawler is off.
                self.out
                    .extend_from_slice(b"CLIENT_ERROR lru crawler disabled\r\n");
                Ok(())
            }
            CrawlerRequest::Enable => {
                if store.enable_sweep() {
                    ascii::encode_response(&Response::Ok, &mut self.out);
                } else {
                    self.out
                        .extend_from_slice(b"ERROR failed to start lru crawler thread\r\n");
                }
                Ok(())
            }
            CrawlerRequest::Disable => {
                store.disable_sweep();
                ascii::encode_response(&Response::Ok, &mut self.out);
                Ok(())
            }
            CrawlerRequest::Sleep(micros) => {
                store.set_sweep_pause(Duration::from_micros(u64::from(micros)));
                ascii::encode_response(&Response::Ok, &mut self.out);
                Ok(())
            }
            CrawlerRequest::ToCrawl(records) => {
                store.set_sweep_limit(records);
                ascii::encode_response(&Response::Ok, &mut self.out);
                Ok(())
            }
            CrawlerRequest::Crawl(target) => {
                if matches!(target, CrawlTarget::BadClass(_)) {
                    self.out.extend_from_slice(BAD_CLASS);
                } else {
                    // There is one class; crawling any other finds nothing to do.
                    store.sweep_now();
                    ascii::encode_response(&Response::Ok, &mut self.out);
                }
                Ok(())
            }
            CrawlerRequest::Metadump(target) => match target {
                CrawlTarget::BadClass(_) => {
                    self.out.extend_from_slice(BAD_CLASS);
                    Ok(())
                }
                CrawlTarget::Classes(ids) if !ids.contains(&ITEM_CLASS) => {
                    ascii::encode_response(&Response::End, &mut self.out);
                    Ok(())
                }
                CrawlTarget::All | CrawlTarget::Hash | CrawlTarget::Classes(_) => {
                    self.metadump().await
                }
            },
        }
    }

    /// One line per live item, then `END`.
    async fn metadump(&mut self) -> Result<(), Disconnected> {
        self.list_items(usize::MAX, |item, out| {
            let entry = MetadumpEntry {
                key: item.key,
                exp: if item.expires_at == 0 {
                    -1
                } else {
                    i64::from(item.expires_at)
                },
                last_access: u64::from(item.access.last_access),
                cas: item.cas,
                fetched: item.access.fetched_before,
                class: u32::from(ITEM_CLASS),
                size: item.stored_size,
            };
            ascii::encode_metadump_entry(&entry, out);
        })
        .await
    }

    /// `stats cachedump`: `ITEM <key> [<value bytes> b; <expiry> s]` for up to `limit`
    /// items, then `END`.
    pub(crate) async fn cachedump(&mut self, limit: usize) -> Result<(), Disconnected> {
        self.list_items(limit, |item, out| {
            out.extend_from_slice(b"ITEM ");
            out.extend_from_slice(&item.key);
            out.extend_from_slice(
                format!(" [{} b; {} s]\r\n", item.value_len, item.expires_at).as_bytes(),
            );
        })
        .await
    }

    /// Writes up to `limit` live items with `line`, then `END`.
    async fn list_items(
        &mut self,
        limit: usize,
        mut line: impl FnMut(ItemSummary, &mut BytesMut),
    ) -> Result<(), Disconnected> {
        let namespace = self.gateway.namespace;
        let mut cursor = ItemCursor::new();
        let mut listed = 0;
        while listed < limit && !cursor.is_done() {
            let items = match self
                .gateway
                .store
                .scan_items(namespace, &mut cursor, SCAN_CHUNK)
            {
                Ok(items) => items,
                Err(err) => {
                    // As with a failing multi-get: what was listed stands, and an error
                    // line instead of END says the list is incomplete.
                    ascii::encode_response(&store_error(&err), &mut self.out);
                    return Ok(());
                }
            };
            for item in items.into_iter().take(limit - listed) {
                line(item, &mut self.out);
                listed += 1;
            }
            if self.output_full() {
                self.flush().await?;
            }
            tokio::task::yield_now().await;
        }
        ascii::encode_response(&Response::End, &mut self.out);
        Ok(())
    }
}
