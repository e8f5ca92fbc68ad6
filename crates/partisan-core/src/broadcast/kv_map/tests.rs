//! The replicated map's rules, exchanges and bad input, by hand between `KvMap` values.

use super::*;

fn node(n: &str) -> NodeName {
    NodeName::new(n).unwrap()
}

fn map(n: &str) -> KvMap {
    KvMap::new(node(n), KvConfig::default())
}

fn receipt(n: &NodeName) -> Receipt<'_> {
    Receipt {
        from: n,
        root: n,
        round: 0,
    }
}

/// Broadcasts `op` on `m` and merges it locally, as the engine does; returns (id, payload).
fn write(m: &mut KvMap, op: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (id, payload) = m.broadcast_data(op).unwrap();
    let me = m.clock().node.clone();
    assert!(m.merge(&id, &payload, receipt(&me)));
    (id, payload)
}

fn put(m: &mut KvMap, key: &str, value: &[u8], wall: u64) -> (Vec<u8>, Vec<u8>) {
    write(m, &encode_put(key, value, wall))
}

fn del(m: &mut KvMap, key: &str, wall: u64) -> (Vec<u8>, Vec<u8>) {
    write(m, &encode_delete(key, wall))
}

fn deliver(m: &mut KvMap, msg: &(Vec<u8>, Vec<u8>)) -> bool {
    let from = node("sender@h");
    m.merge(&msg.0, &msg.1, receipt(&from))
}

/// Everything a map holds, tombstones included.
fn dump(m: &KvMap) -> Vec<(String, Hlc, Option<Vec<u8>>)> {
    m.entries
        .iter()
        .map(|(k, s)| (k.clone(), s.hlc.clone(), s.value.clone()))
        .collect()
}

/// Runs one exchange initiated by `a` with `b`; returns the sizes of the messages.
fn exchange(a: &mut KvMap, b: &mut KvMap) -> Vec<usize> {
    let (an, bn) = (a.clock().node.clone(), b.clock().node.clone());
    let digest = a.exchange_start(&bn).unwrap();
    let ExchangeStep::Continue(reply) = b.exchange_step(&an, &digest, false) else {
        panic!("responder ended the session early");
    };
    let ExchangeStep::Finish(Some(last)) = a.exchange_step(&bn, &reply, true) else {
        panic!("initiator did not finish with entries");
    };
    assert_eq!(
        b.exchange_step(&an, &last, false),
        ExchangeStep::Finish(None)
    );
    vec![digest.len(), reply.len(), last.len()]
}

#[test]
fn handler_basics() {
    let m = map("a@h");
    assert_eq!(m.name(), KV_HANDLER);
    assert_eq!(m.channel(), None);
    assert!(m.as_any().downcast_ref::<KvMap>().is_some());
    let m2 = KvMap::with_name("settings", node("a@h"), KvConfig::default());
    assert_eq!(m2.name(), "settings");
    assert_eq!(
        KvConfig::default().tombstone_grace_micros,
        3_600_000_000,
        "one hour"
    );
    assert!(m.is_empty() && m.tombstones() == 0);
}

#[test]
fn hlc_orders_by_wall_counter_node() {
    let h = |w, c, n: &str| Hlc {
        wall: w,
        counter: c,
        node: node(n),
    };
    assert!(h(1, 9, "z@h") < h(2, 0, "a@h"));
    assert!(h(2, 0, "z@h") < h(2, 1, "a@h"));
    assert!(h(2, 1, "a@h") < h(2, 1, "b@h"));
}

#[test]
fn local_writes_are_ordered_and_readable() {
    let mut m = map("a@h");
    put(&mut m, "x", b"1", 100);
    // The wall clock going backwards does not reorder writes.
    put(&mut m, "x", b"2", 50);
    assert_eq!(m.get("x"), Some(&b"2"[..]));
    assert_eq!(
        (m.clock().wall, m.clock().counter),
        (100, 1),
        "counter bumped when wall does not advance"
    );
    put(&mut m, "y", b"3", 200);
    assert_eq!((m.clock().wall, m.clock().counter), (200, 0));
    del(&mut m, "x", 300);
    assert_eq!(m.get("x"), None);
    assert_eq!(m.len(), 1);
    assert_eq!(m.tombstones(), 1);
    let live: Vec<_> = m.entries().collect();
    assert_eq!(live, vec![("y", &b"3"[..])]);
    assert_eq!(m.stats().merged_broadcast, 4);
}

#[test]
fn concurrent_writes_converge_whatever_the_merge_order() {
    let mut a = map("a@h");
    let mut b = map("b@h");
    let mut c = map("c@h");
    // Same wall time on both: the node name breaks the tie.
    let wa = put(&mut a, "k", b"from a", 1000);
    let wb = put(&mut b, "k", b"from b", 1000);
    assert!(deliver(&mut a, &wb), "b's stamp is greater");
    assert!(!deliver(&mut b, &wa), "a's stamp is older");
    assert!(deliver(&mut c, &wa));
    assert!(deliver(&mut c, &wb));
    let mut d = map("d@h");
    assert!(deliver(&mut d, &wb));
    assert!(!deliver(&mut d, &wa));
    for m in [&a, &b, &c, &d] {
        assert_eq!(m.get("k"), Some(&b"from b"[..]));
    }
    assert_eq!(dump(&a), dump(&c));
    assert_eq!(dump(&b), dump(&d));
    assert_eq!(dump(&a), dump(&b));
    // Later wall time wins regardless of node.
    let wa2 = put(&mut a, "k", b"a again", 2000);
    assert!(deliver(&mut b, &wa2));
    assert_eq!(b.get("k"), Some(&b"a again"[..]));
    assert_eq!(d.stats().stale, 1);
}

#[test]
fn observing_a_future_stamp_orders_later_local_writes_after_it() {
    let mut a = map("a@h");
    let mut z = map("z@h");
    let future = put(&mut z, "k", b"z", 5_000_000);
    assert!(deliver(&mut a, &future));
    assert_eq!((a.clock().wall, a.clock().counter), (5_000_000, 0));
    assert_eq!(
        a.clock().node,
        node("a@h"),
        "the clock keeps this node's name"
    );
    // a's wall clock lags far behind, and "a@h" < "z@h", yet its write wins.
    let later = put(&mut a, "k", b"a", 10);
    assert_eq!(a.get("k"), Some(&b"a"[..]));
    assert_eq!(
        a.timestamp("k").unwrap(),
        &Hlc {
            wall: 5_000_000,
            counter: 1,
            node: node("a@h")
        }
    );
    assert!(deliver(&mut z, &later));
    assert_eq!(z.get("k"), Some(&b"a"[..]));
    // Observing an older stamp does not move the clock back.
    let mut old = map("o@h");
    let o = put(&mut old, "other", b"o", 3);
    assert!(deliver(&mut a, &o));
    assert_eq!((a.clock().wall, a.clock().counter), (5_000_000, 1));
}

#[test]
fn counter_overflow_moves_wall_and_saturated_clock_refuses() {
    let mut a = map("a@h");
    let mut z = map("z@h");
    a.observe(&Hlc {
        wall: 7,
        counter: u32::MAX,
        node: node("z@h"),
    });
    let (_, p) = put(&mut a, "k", b"v", 1);
    let e: EntryWire<'_> = decode(&p).unwrap();
    assert_eq!((e.hlc.wall, e.hlc.counter), (8, 0));
    z.observe(&Hlc {
        wall: u64::MAX,
        counter: u32::MAX,
        node: node("z@h"),
    });
    let err = z.broadcast_data(&encode_put("k", b"v", 1)).unwrap_err();
    assert!(err.contains("clock"), "{err}");
}

#[test]
fn delete_then_older_put_does_not_resurrect() {
    let mut a = map("a@h");
    let p1 = put(&mut a, "k", b"v1", 100);
    let d = del(&mut a, "k", 200);
    let mut c = map("c@h");
    assert!(deliver(&mut c, &d));
    assert!(!deliver(&mut c, &p1), "older put is stale");
    assert_eq!(c.get("k"), None);
    assert_eq!(c.tombstones(), 1);
    assert!(c.is_empty());
    // A later put does bring it back.
    let p3 = put(&mut a, "k", b"v3", 300);
    assert!(deliver(&mut c, &p3));
    assert_eq!(c.get("k"), Some(&b"v3"[..]));
    assert_eq!(c.tombstones(), 0);
    assert_eq!(c.len(), 1);
}

#[test]
fn tombstones_are_purged_after_the_grace_period() {
    let cfg = KvConfig {
        tombstone_grace_micros: 1000,
    };
    let mut a = KvMap::new(node("a@h"), cfg);
    let d = del(&mut a, "gone", 100);
    put(&mut a, "live", b"x", 1100);
    assert_eq!(a.purge_tombstones(), 0, "100 is not older than 1100 - 1000");
    put(&mut a, "live", b"y", 1101);
    assert_eq!(a.purge_tombstones(), 1);
    assert_eq!(a.tombstones(), 0);
    assert_eq!(a.stats().purged, 1);
    assert_eq!(a.timestamp("gone"), None);
    assert_eq!(a.graft(&d.0), GraftReply::Missing);
    assert!(!a.is_stale(&d.0));
    // A tombstone past the grace period is not stored again for an absent key.
    assert!(!deliver(&mut a, &d));
    assert_eq!(a.tombstones(), 0);

    // Exchanges purge as they start.
    let mut b = KvMap::new(node("b@h"), cfg);
    del(&mut b, "k", 10);
    put(&mut b, "other", b"v", 5000);
    assert_eq!(b.tombstones(), 1);
    b.exchange_start(&node("a@h")).unwrap();
    assert_eq!(b.tombstones(), 0);
    assert_eq!(b.len(), 1);
}

#[test]
fn is_stale_and_graft_verdicts() {
    let mut a = map("a@h");
    let mut b = map("b@h");
    let v1 = put(&mut a, "k", b"1", 100);
    assert!(!b.is_stale(&v1.0), "unknown key");
    assert_eq!(b.graft(&v1.0), GraftReply::Missing);
    assert!(deliver(&mut b, &v1));
    assert!(b.is_stale(&v1.0), "same stamp");
    assert_eq!(b.graft(&v1.0), GraftReply::Payload(v1.1.clone()));
    let v2 = put(&mut a, "k", b"2", 200);
    assert!(!b.is_stale(&v2.0), "newer stamp");
    assert_eq!(b.graft(&v2.0), GraftReply::Missing);
    assert!(deliver(&mut b, &v2));
    assert!(b.is_stale(&v1.0), "superseded");
    assert_eq!(b.graft(&v1.0), GraftReply::Stale);
    // Grafted payloads merge like broadcast ones.
    let mut c = map("c@h");
    let GraftReply::Payload(p) = b.graft(&v2.0) else {
        panic!()
    };
    assert!(deliver(&mut c, &(v2.0.clone(), p)));
    assert_eq!(c.get("k"), Some(&b"2"[..]));
    // Tombstones graft too.
    let d = del(&mut a, "k", 300);
    assert_eq!(a.graft(&d.0), GraftReply::Payload(d.1.clone()));
}

#[test]
fn invalid_operations_are_refused_with_a_reason() {
    let mut m = map("a@h");
    let e = m.broadcast_data(&encode_put("", b"v", 1)).unwrap_err();
    assert!(e.contains("empty"), "{e}");
    let long = "k".repeat(MAX_KEY_LEN + 1);
    let e = m.broadcast_data(&encode_put(&long, b"v", 1)).unwrap_err();
    assert!(e.contains("1024"), "{e}");
    assert!(m.broadcast_data(&encode_delete(&long, 1)).is_err());
    assert!(m
        .broadcast_data(&encode_put(&"k".repeat(MAX_KEY_LEN), b"v", 1))
        .is_ok());
    let big = vec![0u8; MAX_VALUE_LEN + 1];
    let e = m.broadcast_data(&encode_put("k", &big, 1)).unwrap_err();
    assert!(e.contains("at most"), "{e}");
    assert!(m
        .broadcast_data(&encode_put("k", &big[..MAX_VALUE_LEN], 1))
        .is_ok());
    let e = m.broadcast_data(b"\xff\xff\xff").unwrap_err();
    assert!(e.contains("malformed"), "{e}");
    assert!(m.broadcast_data(&[]).is_err());
    // Invalid UTF-8 in the key: variant Put, key of 2 bytes 0xff 0xfe, value of 0, wall 0.
    assert!(m.broadcast_data(&[0, 2, 0xff, 0xfe, 0, 0]).is_err());
    // Trailing bytes.
    let mut op = encode_put("k", b"v", 1);
    op.push(0);
    assert!(m.broadcast_data(&op).is_err());
    assert!(m.is_empty(), "broadcast_data never stores by itself");
}

#[test]
fn malformed_bytes_never_panic() {
    let mut a = map("a@h");
    let mut b = map("b@h");
    let w = put(&mut a, "k", b"value", 100);
    let d = del(&mut a, "gone", 101);
    put(&mut b, "j", b"other", 50);
    let an = node("a@h");
    let bn = node("b@h");
    // Mismatched id and payload.
    assert!(!b.merge(&d.0, &w.1, receipt(&an)));
    assert!(!b.merge(b"junk", &w.1, receipt(&an)));
    assert!(!b.merge(&w.0, b"junk", receipt(&an)));
    assert!(b.is_stale(b"junk"));
    assert_eq!(b.graft(b"junk"), GraftReply::Missing);
    assert_eq!(
        b.exchange_step(&an, b"junk", false),
        ExchangeStep::Finish(None)
    );
    // Out-of-turn messages end the session.
    let digest = a.exchange_start(&bn).unwrap();
    assert_eq!(
        a.exchange_step(&bn, &digest, true),
        ExchangeStep::Finish(None)
    );
    // A range with start >= end (BTreeMap::range would panic on it).
    let bad = encode(&ExchangeWire::Digest {
        start: Some("z"),
        end: Some("a"),
        keys: vec![],
    })
    .unwrap();
    assert_eq!(
        b.exchange_step(&an, &bad, false),
        ExchangeStep::Finish(None)
    );
    let empty = encode(&ExchangeWire::Digest {
        start: Some("m"),
        end: Some("m"),
        keys: vec![],
    })
    .unwrap();
    assert_eq!(
        b.exchange_step(&an, &empty, false),
        ExchangeStep::Finish(None)
    );
    // An entry with an oversized value is refused.
    let big = vec![1u8; MAX_VALUE_LEN + 1];
    let hlc = Hlc {
        wall: 1,
        counter: 0,
        node: an.clone(),
    };
    let id = encode(&IdWire {
        key: "k",
        hlc: hlc.clone(),
    })
    .unwrap();
    let p = encode(&EntryWire {
        key: "k",
        hlc,
        value: Some(Raw(&big)),
    })
    .unwrap();
    assert!(!b.merge(&id, &p, receipt(&an)));

    // Every truncation and every single-byte corruption of valid messages, everywhere.
    let (_, bn_reply) = {
        let mut a2 = map("a@h");
        let mut b2 = map("b@h");
        put(&mut a2, "k1", b"v1", 1);
        put(&mut b2, "k2", b"v2", 2);
        let dg = a2.exchange_start(&bn).unwrap();
        let ExchangeStep::Continue(r) = b2.exchange_step(&an, &dg, false) else {
            panic!()
        };
        (dg, r)
    };
    let samples = [
        w.0.clone(),
        w.1.clone(),
        d.0.clone(),
        d.1.clone(),
        encode_put("key", b"val", 7),
        encode_delete("key", 7),
        digest.clone(),
        bn_reply,
    ];
    for s in &samples {
        let mut variants: Vec<Vec<u8>> = (0..s.len()).map(|n| s[..n].to_vec()).collect();
        for i in 0..s.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut v = s.clone();
                v[i] ^= x;
                variants.push(v);
            }
        }
        for v in &variants {
            let _ = b.broadcast_data(v);
            let _ = b.merge(v, &w.1, receipt(&an));
            let _ = b.merge(&w.0, v, receipt(&an));
            let _ = b.merge(v, v, receipt(&an));
            let _ = b.is_stale(v);
            let _ = b.graft(v);
            let _ = b.exchange_step(&an, v, false);
            let _ = b.exchange_step(&an, v, true);
        }
    }
}

/// `a` and `b` diverge: own keys, shared keys written on both sides, deletes on both sides.
/// Phase 1 writes are all stamped before phase 2 ones (wall times far apart).
fn diverged(n: usize) -> (KvMap, KvMap) {
    let mut a = map("a@h");
    let mut b = map("b@h");
    let key = |i: usize| format!("key{i:06}");
    for i in 0..n {
        let w = 1000 + i as u64;
        match i % 5 {
            2 => {
                put(&mut a, &key(i), b"a-old", w);
            }
            3 => {
                let m = put(&mut a, &key(i), b"both", w);
                assert!(deliver(&mut b, &m));
            }
            4 => {
                put(&mut b, &key(i), b"b-old", w);
                del(&mut b, &key(i), w);
            }
            _ => {}
        }
    }
    for i in 0..n {
        let w = 1_000_000 + i as u64;
        match i % 5 {
            0 => {
                put(&mut a, &key(i), format!("a{i}").as_bytes(), w);
            }
            1 => {
                put(&mut b, &key(i), format!("b{i}").as_bytes(), w);
            }
            2 => {
                put(&mut b, &key(i), format!("b-new{i}").as_bytes(), w);
            }
            3 => {
                del(&mut a, &key(i), w);
            }
            _ => {
                put(&mut a, &key(i), format!("a-new{i}").as_bytes(), w);
            }
        }
    }
    (a, b)
}

fn assert_converged(a: &KvMap, b: &KvMap, n: usize) {
    assert!(dump(a) == dump(b), "the maps differ");
    for i in 0..n {
        let k = format!("key{i:06}");
        let want: Option<Vec<u8>> = match i % 5 {
            0 => Some(format!("a{i}").into_bytes()),
            1 => Some(format!("b{i}").into_bytes()),
            2 => Some(format!("b-new{i}").into_bytes()),
            3 => None,
            _ => Some(format!("a-new{i}").into_bytes()),
        };
        assert_eq!(a.get(&k), want.as_deref(), "{k}");
    }
}

#[test]
fn one_exchange_converges_small_maps() {
    let n = 100;
    let (mut a, mut b) = diverged(n);
    assert_ne!(dump(&a), dump(&b));
    exchange(&mut a, &mut b);
    assert_converged(&a, &b, n);
    assert_eq!(a.tombstones(), n / 5, "tombstones are exchanged too");
    assert!(a.stats().merged_exchange > 0 && b.stats().merged_exchange > 0);
    // A second exchange has nothing to do.
    let (sa, sb) = (a.stats().clone(), b.stats().clone());
    exchange(&mut b, &mut a);
    assert_eq!((a.stats(), b.stats()), (&sa, &sb));
    // Merged entries were observed: later local writes win.
    let later = put(&mut a, "key000001", b"fresh", 0);
    assert!(deliver(&mut b, &later));
    assert_eq!(b.get("key000001"), Some(&b"fresh"[..]));
}

#[test]
fn exchanges_page_through_more_than_4096_keys() {
    let n = 10_000;
    let (mut a, mut b) = diverged(n);
    let mut rounds = 0;
    while dump(&a) != dump(&b) {
        rounds += 1;
        assert!(rounds <= 4, "not converged after {rounds} exchanges");
        let digest_len = {
            let d = a.clone_digest_for_test(&node("b@h"));
            let ExchangeWire::Digest { keys, .. } = decode(&d).unwrap() else {
                panic!()
            };
            keys.len()
        };
        assert!(digest_len <= EXCHANGE_MAX_KEYS);
        exchange(&mut a, &mut b);
    }
    // Pages of 4096 keys of a's ~8000: two exchanges, three at most with the wrap.
    assert!(rounds >= 2, "{rounds}");
    assert_converged(&a, &b, n);
}

#[test]
fn an_empty_initiator_is_filled_through_responder_cuts() {
    // b has 10000 keys, a none: the first digest covers everything, and b's reply is cut
    // at 4096 entries; a's next page starts at the cut.
    let mut a = map("a@h");
    let mut b = map("b@h");
    for i in 0..10_000 {
        put(&mut b, &format!("k{i:05}"), b"v", 1 + i as u64);
    }
    let mut rounds = 0;
    while a.len() < b.len() {
        rounds += 1;
        assert!(rounds <= 3, "{rounds}");
        exchange(&mut a, &mut b);
        assert!(a.len() <= EXCHANGE_MAX_KEYS * rounds);
    }
    assert_eq!(rounds, 3);
    assert_eq!(dump(&a), dump(&b));
    // And the other way round: b initiating towards an empty c pushes its pages over.
    let mut c = map("c@h");
    let mut rounds = 0;
    while c.len() < b.len() {
        rounds += 1;
        assert!(rounds <= 3, "{rounds}");
        exchange(&mut b, &mut c);
    }
    assert_eq!(dump(&b), dump(&c));
}

#[test]
fn exchange_messages_stay_within_the_byte_bound() {
    let mut a = map("a@h");
    let mut b = map("b@h");
    let big = vec![7u8; 512 * 1024];
    for i in 0..20 {
        put(&mut a, &format!("a{i:02}"), &big, 1 + i);
        put(&mut b, &format!("b{i:02}"), &big, 1 + i);
    }
    put(&mut a, "max", &vec![1u8; MAX_VALUE_LEN], 100);
    let limit = EXCHANGE_MAX_BYTES + 64 * 1024;
    let mut rounds = 0;
    while dump(&a) != dump(&b) {
        rounds += 1;
        assert!(rounds <= 12, "{rounds}");
        let sizes = if rounds % 2 == 0 {
            exchange(&mut a, &mut b)
        } else {
            exchange(&mut b, &mut a)
        };
        assert!(sizes.iter().all(|s| *s <= limit), "{sizes:?}");
    }
    assert_eq!(a.len(), 41);
}

#[test]
fn concurrent_exchanges_and_interleaved_writes_still_converge() {
    let (mut a, mut b) = diverged(9000);
    let mut c = map("c@h");
    let (an, bn, cn) = (node("a@h"), node("b@h"), node("c@h"));
    for round in 0..12u64 {
        // a starts sessions with b and c at once, then answers them in reverse order.
        let d1 = a.exchange_start(&bn).unwrap();
        let d2 = a.exchange_start(&cn).unwrap();
        let ExchangeStep::Continue(r2) = c.exchange_step(&an, &d2, false) else {
            panic!()
        };
        let ExchangeStep::Continue(r1) = b.exchange_step(&an, &d1, false) else {
            panic!()
        };
        put(&mut b, &format!("late{round}"), b"x", 100_000 + round);
        let ExchangeStep::Finish(Some(f2)) = a.exchange_step(&cn, &r2, true) else {
            panic!()
        };
        let ExchangeStep::Finish(Some(f1)) = a.exchange_step(&bn, &r1, true) else {
            panic!()
        };
        c.exchange_step(&an, &f2, false);
        b.exchange_step(&an, &f1, false);
        exchange(&mut c, &mut b);
    }
    // Writes stopped: a few more rounds finish the job.
    for _ in 0..4 {
        exchange(&mut a, &mut b);
        exchange(&mut c, &mut a);
    }
    assert!(dump(&a) == dump(&b), "a and b differ");
    assert!(dump(&a) == dump(&c), "a and c differ");
    assert_eq!(a.len(), 9000 - 9000 / 5 + 12);
}

impl KvMap {
    /// The digest the next exchange would send, without moving the cursor.
    fn clone_digest_for_test(&mut self, peer: &NodeName) -> Vec<u8> {
        let cursor = self.cursor.clone();
        let d = self.exchange_start(peer).unwrap();
        self.cursor = cursor;
        d
    }
}
