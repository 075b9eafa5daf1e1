//! The paged task listing (`GET /v1/tasks?limit=N&cursor=C`, docs/contract.md):
//! SSCAN over the index groups in turn, one group after the other.
//!
//! A cursor names the group and the SSCAN cursor within it. SSCAN answers in
//! batches of about COUNT ids (a small set may come whole); when a batch holds
//! more than the page has room for, the page takes the batch's first ids in
//! sorted order and the cursor also carries the COUNT and the last id taken,
//! so the next page reads the same batch again (same SSCAN cursor, same COUNT)
//! and goes on after that id. SSCAN's promise holds (a task indexed for the
//! whole walk is listed at least once) except in one case: a group's set
//! resized by Redis between the two pages that share a batch may bring into
//! that batch a task sorted before the last id taken, which this walk then
//! misses. Tests: tests/tests/fleet_api.rs.

use super::view::TaskView;
use super::{Result, Store};
use redis::AsyncCommands;
use std::fmt;
use vodfleet_proto::fleet::keys;

/// Where a listing goes on: group, SSCAN cursor in it, and, when the page
/// ended inside a batch, that batch's COUNT and the last id taken from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    group: u32,
    scan: u64,
    within: Option<(usize, String)>,
}

/// A cursor that is not one this API handed out.
#[derive(Debug, thiserror::Error)]
#[error("not a cursor this API returned")]
pub struct BadCursor;

impl fmt::Display for Cursor {
    /// `G.S` or `G.S.COUNT.HEX` (the last id taken, hex-encoded): opaque to clients.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.group, self.scan)?;
        if let Some((count, after)) = &self.within {
            write!(f, ".{count}.{}", hex::encode(after))?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Cursor {
    type Err = BadCursor;

    fn from_str(s: &str) -> std::result::Result<Cursor, BadCursor> {
        let mut parts = s.split('.');
        let group: u32 = parts.next().and_then(|g| g.parse().ok()).ok_or(BadCursor)?;
        let scan: u64 = parts.next().and_then(|c| c.parse().ok()).ok_or(BadCursor)?;
        let within = match parts.next() {
            None => None,
            Some(n) => {
                let count: usize = n.parse().ok().filter(|n| *n > 0).ok_or(BadCursor)?;
                let after = parts
                    .next()
                    .and_then(|h| hex::decode(h).ok())
                    .and_then(|b| String::from_utf8(b).ok())
                    .filter(|a| !a.is_empty())
                    .ok_or(BadCursor)?;
                Some((count, after))
            }
        };
        if group >= keys::GROUPS || parts.next().is_some() {
            return Err(BadCursor);
        }
        Ok(Cursor {
            group,
            scan,
            within,
        })
    }
}

/// One page of the listing.
#[derive(Debug)]
pub struct Page {
    /// The page's tasks (at most the limit asked for; fewer when some expired).
    pub tasks: Vec<TaskView>,
    /// Where the next page starts; `None`: this was the last.
    pub next: Option<Cursor>,
}

impl Store {
    /// Up to `limit` (at least 1) tasks from `cursor` on (`None`: the start).
    pub async fn page(&self, cursor: Option<&Cursor>, limit: usize) -> Result<Page> {
        let limit = limit.max(1);
        let mut at = cursor.cloned().unwrap_or_default();
        let mut ids: Vec<String> = Vec::with_capacity(limit);
        let mut c = self.conn.clone();
        while at.group < keys::GROUPS && ids.len() < limit {
            let room = limit - ids.len();
            let within = at.within.take();
            // The batch a page ended inside is read again with its own COUNT.
            let count = within.as_ref().map_or(room.max(10), |(n, _)| *n);
            let (next, mut batch): (u64, Vec<String>) = redis::cmd("SSCAN")
                .arg(keys::tasks_in(at.group))
                .arg(at.scan)
                .arg("COUNT")
                .arg(count)
                .query_async(&mut c)
                .await?;
            batch.sort_unstable();
            batch.dedup();
            if let Some((_, after)) = within {
                batch.retain(|id| *id > after);
            }
            if batch.len() > room {
                batch.truncate(room);
                at.within = batch.last().map(|last| (count, last.clone()));
                ids.extend(batch);
                break;
            }
            ids.extend(batch);
            if next == 0 {
                at.group += 1;
                at.scan = 0;
            } else {
                at.scan = next;
            }
        }
        let tasks = self.views(&ids).await?;
        Ok(Page {
            tasks,
            next: (at.group < keys::GROUPS).then_some(at),
        })
    }

    /// The views of `ids` (read one by one, concurrently); ids whose record
    /// expired (over for 48 h) are dropped, from the index too.
    pub(super) async fn views(&self, ids: &[String]) -> Result<Vec<TaskView>> {
        let maps = self
            .each(ids.iter(), |id| {
                let mut c = self.conn.clone();
                async move {
                    let m: std::collections::HashMap<String, String> =
                        c.hgetall(keys::task(id)).await?;
                    Ok(m)
                }
            })
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, m) in ids.iter().zip(&maps) {
            match Self::view(id, m)? {
                Some(v) => out.push(v),
                None => self.forget(id).await?,
            }
        }
        Ok(out)
    }

    /// Drops an id whose record expired from its group's task set.
    pub(super) async fn forget(&self, id: &str) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = c.srem(keys::tasks_of(id), id).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_strangers_are_refused() {
        for c in [
            Cursor::default(),
            Cursor {
                group: 15,
                scan: 1234,
                within: Some((57, "task.with.dots:and/slashes".into())),
            },
        ] {
            assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        }
        for bad in [
            "",
            "x",
            "1",
            "16.0",
            "1.-2",
            "1.2.zz",
            "1.2.",
            "1.2.5",
            "1.2.5.",
            "1.2.0.61",
            "1.2.5.zz",
            "1.2.5.61.1",
        ] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?} parsed");
        }
    }
}
