//! Reading a node page by page (`xmpp::paging`, what the component and the
//! reference client use for active) against the real pubsub services:
//! ejabberd pages its items (XEP-0059), Prosody does not and answers the
//! paged request with every item. Either way, every item comes exactly once.

mod common;

use common::pp::{iq_get, iq_set, User};
use common::{loopback, Lab, Server};
use pubpresence::minidom::Element;
use pubpresence::wire::pubsub;
use pubpresence::xmpp::paging;
use std::time::Duration;

const NODE: &str = "paging-test";
const ITEMS: usize = 25;
const PAGE: usize = 7;
const T: Duration = Duration::from_secs(10);

fn payload(i: usize) -> Element {
    Element::builder("n", "urn:pubpresence:test")
        .append(i.to_string())
        .build()
}

/// The server's admin makes a node of 25 items and reads it 7 at a time;
/// returns the ids read and the requests made.
async fn read_in_pages(server: &Server) -> (Vec<String>, usize) {
    let admin = User::connect(server, "admin", "paging", loopback(3)).await;
    let service = server.pubsub_jid().to_string();
    admin
        .c2s
        .iq(iq_set(&service, create(NODE)), T)
        .await
        .unwrap_or_else(|e| panic!("{}: creating {NODE}: {e}", server.label()));
    for i in 0..ITEMS {
        admin
            .c2s
            .iq(
                iq_set(
                    &service,
                    pubsub::publish(NODE, Some(&format!("i{i:02}")), payload(i)),
                ),
                T,
            )
            .await
            .unwrap_or_else(|e| panic!("{}: publish {i}: {e}", server.label()));
    }
    let mut asked = 0;
    let items = paging::all_items(NODE, PAGE, |ask| {
        asked += 1;
        admin.c2s.iq(iq_get(&service, ask), T)
    })
    .await
    .unwrap_or_else(|e| panic!("{}: reading {NODE}: {e}", server.label()));
    let mut ids: Vec<String> = items.into_iter().map(|(id, _)| id).collect();
    ids.sort();
    admin.close().await;
    (ids, asked)
}

/// A node that keeps 100 items (Prosody's default keeps 20).
fn create(node: &str) -> Element {
    pubsub::create(
        node,
        pubsub::config_form(&[("pubsub#max_items", "100".to_string())]),
    )
}

fn want() -> Vec<String> {
    (0..ITEMS).map(|i| format!("i{i:02}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_pages_the_items() {
    let server = Server::ejabberd();
    let (ids, asked) = read_in_pages(&server).await;
    assert_eq!(ids, want(), "{}: every item once", server.label());
    assert_eq!(
        asked,
        ITEMS.div_ceil(PAGE),
        "{}: one request per page",
        server.label()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_answers_with_every_item() {
    let server = Server::prosody();
    let (ids, asked) = read_in_pages(&server).await;
    assert_eq!(ids, want(), "{}: every item once", server.label());
    assert_eq!(asked, 1, "{}: no paging, one request", server.label());
}
