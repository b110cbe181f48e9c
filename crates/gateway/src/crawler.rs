//! `lru_crawler crawl` and `lru_crawler metadump`.

use murakumo_protocol::ascii::{
    self, BAD_CLASS, CrawlTarget, CrawlerRequest, MetadumpEntry, Response,
};
use murakumo_server::ops::ItemCursor;

use crate::ascii::store_error;
use crate::connection::{Connection, Disconnected};
use crate::stats::{ITEM_CLASS, SCAN_CHUNK};

impl Connection {
    pub(crate) async fn lru_crawler(
        &mut self,
        request: CrawlerRequest,
    ) -> Result<(), Disconnected> {
        match request {
            CrawlerRequest::Crawl(target) => {
                if matches!(target, CrawlTarget::BadClass(_)) {
                    self.out.extend_from_slice(BAD_CLASS);
                } else {
                    // There is one class; crawling any other finds nothing to do.
                    self.gateway.store.sweep_now();
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

    /// Streams one line per live item, then `END`. The store is walked a chunk of record
    /// headers at a time, and the reply is written out whenever it passes the output
    /// limit, so a dump of any size holds a bounded amount of memory; a client that stops
    /// reading stalls only its own connection.
    async fn metadump(&mut self) -> Result<(), Disconnected> {
        let namespace = self.gateway.namespace;
        let mut cursor = ItemCursor::new();
        while !cursor.is_done() {
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
            for item in items {
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
                ascii::encode_metadump_entry(&entry, &mut self.out);
            }
            if self.output_full() {
                self.flush().await?;
            }
        }
        ascii::encode_response(&Response::End, &mut self.out);
        Ok(())
    }
}
