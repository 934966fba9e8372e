//! Fetching a whole node page by page (XEP-0059) where the pubsub service
//! pages its items (ejabberd), in one request where it does not (Prosody
//! ignores the paging request and answers with every item): with 100,000
//! connections, active in one answer is a stanza of tens of MB (past 32 MiB
//! near 80,000 items on Prosody 13, see `CUT_MID_ANSWER`).
//!
//! The pages are read at different moments, which the client procedure
//! allows (docs/protocol.md, "Why nothing is lost or duplicated"): an item
//! that changes while the pages are read also comes as a live event, which
//! is applied after the fetch.
//!
//! ejabberd's cursor (`<last/>`) is the creation time of the page's last
//! item, to the microsecond, and the next page starts after that time: an
//! item created in the same microsecond as a page's last one would be
//! skipped. A skip shows as fewer items than the last page's `<count/>`,
//! and then the node is read once more in one request.

use crate::wire::pubsub;
use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;
use xmpp_parsers::minidom::Element;

/// Items asked for per page: about 2 MB of `<user/>` items. Large pages on
/// purpose: ejabberd reads and sorts all of a node's items for every page it
/// answers (its Mnesia store), so each page costs it about what the whole
/// node costs. With pages of 1,000, reading 10,000 items cost ejabberd 3.4 s
/// of CPU against 0.4 s in one request (docs/benchmarks.md, "ejabberd
/// cluster: the floors").
pub const PAGE: usize = 10_000;

/// How long one answer of a fetch is waited for, beyond `iq_timeout`
/// (which stays the wait for every other request); the component's listing
/// of every session waits as long (`Connection::iq_whole`). A service that
/// does not page builds the whole node into one answer, on Prosody its one
/// thread: 6.8 s for 30,000 items on Prosody 13, 50 s for 79,000
/// (docs/benchmarks.md, "Past the open-file limit: sessions held inside
/// Prosody"). Just under the streams' own limit on silence (`read_timeout`
/// plus `response_timeout`, 80 s), past which the connection is taken for
/// gone anyway.
pub const ANSWER_WAIT: Duration = Duration::from_secs(75);

/// What most likely ended a connection while an answer holding a whole
/// node was awaited, and the fix (docs/benchmarks.md, "Past the open-file
/// limit: sessions held inside Prosody"): Prosody 13 drops a connection
/// whose unsent data would pass its send-buffer cap, and such an answer
/// passes the default cap near 80,000 items on active.
pub const CUT_MID_ANSWER: &str = "if the server is Prosody 13 or later, it closes a connection \
     whose unsent data pass its max_send_buffer_size (32 MiB unless set; active's whole answer \
     passes that near 80,000 sessions): raise it in Prosody's config, e.g. \
     network_settings = { max_send_buffer_size = 128*1024*1024 }";

/// The wait for one answer of a fetch, for a connection whose other
/// requests wait `iq_timeout`.
pub fn answer_wait(iq_timeout: Duration) -> Duration {
    iq_timeout.max(ANSWER_WAIT)
}

/// Every item of `node` as (id, payload), asking `ask` for each page of
/// `page` items. An item seen on an earlier page is not taken twice.
pub async fn all_items<F, Fut, E>(
    node: &str,
    page: usize,
    mut ask: F,
) -> Result<Vec<(String, Option<Element>)>, E>
where
    F: FnMut(Element) -> Fut,
    Fut: Future<Output = Result<Element, E>>,
{
    let mut all = Vec::new();
    let mut seen = HashSet::new();
    let mut after: Option<String> = None;
    // Bound on the pages, against a service that never says it is done.
    let mut pages_left = usize::MAX;
    loop {
        let answer = ask(pubsub::items_page(node, page, after.as_deref())).await?;
        let items = pubsub::parse_items(&answer);
        let Some(set) = pubsub::parse_page(&answer) else {
            // No paging: this answer was the whole node (nothing to dedupe
            // on the first answer; after pages, the ones not seen yet).
            if all.is_empty() {
                return Ok(items);
            }
            all.extend(items.into_iter().filter(|(id, _)| !seen.contains(id)));
            return Ok(all);
        };
        let got = items.len();
        for (id, payload) in items {
            if seen.insert(id.clone()) {
                all.push((id, payload));
            }
        }
        if let Some(count) = set.count {
            pages_left = pages_left.min(count / page.max(1) + 2);
        }
        pages_left = pages_left.saturating_sub(1);
        let more = match (set.count, &set.last) {
            (_, None) => false,
            (Some(count), Some(_)) => all.len() < count && got > 0,
            (None, Some(_)) => got >= page,
        };
        if !more || pages_left == 0 || set.last == after {
            if set.count.is_some_and(|count| all.len() < count) {
                // Something was skipped (or the service lost count): the
                // whole node at once instead.
                let answer = ask(pubsub::items(node)).await?;
                return Ok(pubsub::parse_items(&answer));
            }
            return Ok(all);
        }
        after = set.last;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_waits_at_least_the_answer_wait_and_never_less_than_iq_timeout() {
        assert_eq!(answer_wait(Duration::from_secs(10)), ANSWER_WAIT);
        assert_eq!(
            answer_wait(Duration::from_secs(120)),
            Duration::from_secs(120)
        );
    }

    /// A node of `n` items served by pages as ejabberd does, or whole.
    fn serve(n: usize, paged: bool, ask: &Element) -> Element {
        let rsm = xmpp_parsers::ns::RSM;
        let set = ask.get_child("set", rsm);
        let max: usize = set
            .and_then(|s| s.get_child("max", rsm))
            .map(|m| m.text().parse().expect("max"))
            .unwrap_or(n);
        let after = set
            .and_then(|s| s.get_child("after", rsm))
            .map(|a| a.text());
        let paged = paged && set.is_some();
        let start = after.map_or(0, |a| a[1..].parse::<usize>().expect("id") + 1);
        let ids: Vec<usize> = if paged {
            (start..n.min(start + max)).collect()
        } else {
            (0..n).collect()
        };
        let mut items = String::new();
        for i in &ids {
            items.push_str(&format!("<item id='i{i}'/>"));
        }
        let set = match (paged, ids.first(), ids.last()) {
            (true, Some(f), Some(l)) => format!(
                "<set xmlns='{rsm}'><first index='{f}'>i{f}</first><last>i{l}</last><count>{n}</count></set>"
            ),
            (true, _, _) => format!("<set xmlns='{rsm}'><count>{n}</count></set>"),
            (false, _, _) => String::new(),
        };
        format!(
            "<iq xmlns='jabber:client' type='result'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <items node='n'>{items}</items>{set}</pubsub></iq>"
        )
        .parse()
        .expect("xml")
    }

    #[tokio::test]
    async fn a_skipped_item_reads_the_node_whole() {
        // Pages of 10 that leave out item 13 but count 30.
        let mut asked = Vec::new();
        let items = all_items("n", 10, |ask| {
            let paged = ask.get_child("set", xmpp_parsers::ns::RSM).is_some();
            asked.push(paged);
            let mut answer = serve(30, paged, &ask);
            if paged {
                let pubsub = answer
                    .get_child_mut("pubsub", crate::wire::ns::PUBSUB)
                    .expect("pubsub");
                let items = pubsub
                    .get_child_mut("items", crate::wire::ns::PUBSUB)
                    .expect("items");
                items.remove_child("item", crate::wire::ns::PUBSUB);
            }
            async move { Ok::<_, ()>(answer) }
        })
        .await
        .expect("items");
        assert_eq!(items.len(), 30, "the whole node in the end");
        // Three pages, a fourth that is empty, then the node whole.
        assert_eq!(asked, [true, true, true, true, false]);
    }

    async fn fetch(n: usize, paged: bool, page: usize) -> (Vec<String>, usize) {
        let mut asked = 0;
        let items = all_items("n", page, |ask| {
            asked += 1;
            let answer = serve(n, paged, &ask);
            async move { Ok::<_, ()>(answer) }
        })
        .await
        .expect("items");
        (items.into_iter().map(|(id, _)| id).collect(), asked)
    }

    #[tokio::test]
    async fn pages_until_the_count() {
        let want: Vec<String> = (0..2500).map(|i| format!("i{i}")).collect();
        assert_eq!(fetch(2500, true, 1000).await, (want.clone(), 3));
        assert_eq!(
            fetch(2000, true, 1000).await.1,
            2,
            "no empty page at an exact fit"
        );
        assert_eq!(fetch(0, true, 1000).await, (vec![], 1));
        // A service without paging: one request.
        assert_eq!(fetch(2500, false, 1000).await, (want, 1));
    }
}
