//! What a redb write transaction costs by itself, against the work inside it:
//! `cargo run --release --example txn_cost`. No fsync anywhere (`Durability::None`): this is
//! the CPU a batch pays to redb. It is why the write-ahead log keeps one transaction open
//! across batches (see `storage/redb/logged.rs`): a commit per batch costs ~10× the batch.
use std::time::Instant;

use redb::{Database, Durability, ReadableDatabase, TableDefinition};

const TABLES: [TableDefinition<u64, &[u8]>; 8] = [
    TableDefinition::new("a"),
    TableDefinition::new("b"),
    TableDefinition::new("c"),
    TableDefinition::new("d"),
    TableDefinition::new("e"),
    TableDefinition::new("f"),
    TableDefinition::new("g"),
    TableDefinition::new("h"),
];
const N: u64 = 5000;

fn micros_each(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() / N as f64 * 1e6
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("x.redb")).unwrap();
    let record = vec![7_u8; 120];
    let mut key = 0_u64;
    // A store's batch: eight tables opened, four rows written (record, index, count, meta).
    let batch = |txn: &redb::WriteTransaction, key: &mut u64| {
        let mut tables: Vec<_> = TABLES.iter().map(|d| txn.open_table(*d).unwrap()).collect();
        for table in tables.iter_mut().take(4) {
            table.insert(*key, record.as_slice()).unwrap();
        }
        *key += 1;
    };

    let t = Instant::now();
    for _ in 0..N {
        let mut txn = db.begin_write().unwrap();
        txn.set_durability(Durability::None).unwrap();
        batch(&txn, &mut key);
        txn.commit().unwrap();
    }
    eprintln!("one transaction per batch:      {:5.1} µs per batch", micros_each(t));

    let t = Instant::now();
    for _ in 0..N / 100 {
        let mut txn = db.begin_write().unwrap();
        txn.set_durability(Durability::None).unwrap();
        for _ in 0..100 {
            batch(&txn, &mut key);
        }
        txn.commit().unwrap();
    }
    eprintln!("one transaction per 100 batches: {:5.1} µs per batch", micros_each(t));

    let t = Instant::now();
    for _ in 0..N {
        let txn = db.begin_read().unwrap();
        drop(txn.open_table(TABLES[0]).unwrap());
    }
    eprintln!("a read transaction + one table:  {:5.1} µs", micros_each(t));
}
