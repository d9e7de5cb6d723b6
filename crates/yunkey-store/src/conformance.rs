//! The behaviour every engine must show. Each engine's tests call [`run`] on a fresh [`Db`].

use crate::{Batch, Db};

/// Runs every conformance check against `db`, panicking on the first failure.
pub fn run(db: &Db) {
    get_insert_remove(db);
    batches_are_atomic_and_ordered(db);
    ranges_and_prefixes(db);
    trees_are_separate(db);
}

fn get_insert_remove(db: &Db) {
    let t = db.tree("conf-basic").unwrap();
    assert_eq!(t.get(b"k").unwrap(), None);
    t.insert(b"k", b"v1").unwrap();
    t.insert(b"k", b"v2").unwrap();
    assert_eq!(t.get(b"k").unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(
        t.get_with(b"k", <[u8]>::to_vec).unwrap().as_deref(),
        Some(&b"v2"[..])
    );
    t.remove(b"k").unwrap();
    assert_eq!(t.get(b"k").unwrap(), None);
    assert_eq!(
        t.get_with(b"k", |_| unreachable!("no value")).unwrap(),
        None::<()>
    );
    t.remove(b"absent").unwrap();
    db.flush().unwrap();
}

fn batches_are_atomic_and_ordered(db: &Db) {
    let t = db.tree("conf-batch").unwrap();
    let mut b = Batch::new();
    b.insert(b"a".to_vec(), b"1".to_vec());
    b.insert(b"b".to_vec(), b"2".to_vec());
    b.remove(b"a".to_vec());
    b.insert(b"c".to_vec(), b"3".to_vec());
    assert_eq!(b.len(), 4);
    t.apply(b).unwrap();
    assert_eq!(t.get(b"a").unwrap(), None, "later ops in a batch win");
    assert_eq!(t.len(), 2);
    t.clear().unwrap();
    assert!(t.is_empty());
}

fn ranges_and_prefixes(db: &Db) {
    let t = db.tree("conf-range").unwrap();
    for k in [&b"u/a"[..], b"u/b", b"u/c", b"v/a", b"u\xff"] {
        t.insert(k, k).unwrap();
    }
    let keys: Vec<_> = t.scan_prefix(b"u/").map(|e| e.unwrap().0).collect();
    assert_eq!(
        keys,
        vec![b"u/a".to_vec(), b"u/b".to_vec(), b"u/c".to_vec()]
    );
    let keys: Vec<_> = t
        .range(b"u/b", Some(b"v/a"))
        .map(|e| e.unwrap().0)
        .collect();
    assert_eq!(
        keys,
        vec![b"u/b".to_vec(), b"u/c".to_vec(), b"u\xff".to_vec()]
    );
    assert_eq!(t.first().unwrap().unwrap().0, b"u/a".to_vec());
    assert_eq!(t.last().unwrap().unwrap().0, b"v/a".to_vec());
    let all: Vec<_> = t.scan_prefix(b"").collect();
    assert_eq!(all.len(), 5);
    assert_eq!(t.range(b"u/b", Some(b"u/b")).count(), 0, "an empty range");
    assert_eq!(
        t.range(b"v/a", Some(b"u/a")).count(),
        0,
        "a range ending before it starts"
    );
}

fn trees_are_separate(db: &Db) {
    let a = db.tree("conf-sep-a").unwrap();
    let b = db.tree("conf-sep-b").unwrap();
    a.insert(b"k", b"a").unwrap();
    assert_eq!(b.get(b"k").unwrap(), None);
    let a2 = db.tree("conf-sep-a").unwrap();
    assert_eq!(a2.get(b"k").unwrap().as_deref(), Some(&b"a"[..]));
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_engine() {
        super::run(&crate::Db::memory());
    }

    #[test]
    fn sled_engine_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = crate::Db::open_sled(dir.path()).unwrap();
            super::run(&db);
            db.tree("persist").unwrap().insert(b"k", b"v").unwrap();
            db.flush().unwrap();
        }
        let db = crate::Db::open_sled(dir.path()).unwrap();
        assert_eq!(
            db.tree("persist").unwrap().get(b"k").unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }
}
