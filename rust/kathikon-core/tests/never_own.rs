//! A node opened with `takeover: false` (as a pool's worker processes are) never opens the
//! store file itself: with no owner to connect to it fails with a typed error after its
//! bounded wait, and leaves the file free for a process that may own it.

mod common;

use std::time::Duration;

use common::{config, insert_one, job, open, scratch_dir, store_path};
use kathikon_core::ipc::{Node, NodeConfig};
use kathikon_core::Error;

#[test]
fn a_node_that_never_owns_does_not_take_a_free_store_and_says_why() {
    let dir = scratch_dir();
    let path = store_path(&dir);
    drop(open(&path)); // an existing store, held by nobody
    let refused = Node::open(NodeConfig {
        engine: config(&path),
        takeover: false,
        connect_timeout: Duration::from_millis(200),
        ..NodeConfig::default()
    })
    .expect_err("no owner serves the store");
    match &refused {
        Error::OwnerGone { path: named, detail, .. } => {
            assert_eq!(named, &std::fs::canonicalize(&path).unwrap());
            assert!(detail.contains("takeover=False"), "{detail}");
        }
        other => panic!("expected OwnerGone, got {other:?}"),
    }
    // The file is free: a process that may own it does.
    let engine = open(&path);
    insert_one(&engine, job("default", "w"));
}
