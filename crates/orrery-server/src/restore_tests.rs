use super::*;

fn addr(i: u64) -> NodeAddr {
    NodeAddr {
        addr: format!("10.0.0.{i}:17001"),
        peer_addr: format!("10.0.0.{i}:17101"),
    }
}

fn members(ids: &[u64]) -> BTreeMap<NodeId, NodeAddr> {
    ids.iter().map(|i| (*i, addr(*i))).collect()
}

/// A source cluster of nodes 1..=3 with 8 shards, one node retired.
fn source() -> PlacementState {
    let mut p = PlacementState {
        cluster_id: Some("old".into()),
        members: BTreeMap::new(),
        shards: (0..8)
            .map(|s| ShardInfo {
                replicas: vec![1 + s % 3, 1 + (s + 1) % 3, 1 + (s + 2) % 3],
                epoch: 7,
            })
            .collect(),
        retired: [4, 9].into_iter().collect(),
        ..PlacementState::default()
    };
    for id in 1..=3 {
        let m = Member {
            id,
            addr: addr(id),
            state: MemberState::Voter,
        };
        p.members.insert(id, m);
    }
    p
}

#[test]
fn members_parse_and_bad_lists_are_refused() {
    let m = parse_members("1@a:1/a:2, 7@b:1/b:2", 17001, 17101).expect("parse");
    assert_eq!(m.len(), 2);
    assert_eq!(m[&7].peer_addr, "b:2");
    let m = parse_members("1@n1,2@n2", 7001, 7101).expect("parse hosts");
    assert_eq!(
        (m[&2].addr.as_str(), m[&2].peer_addr.as_str()),
        ("n2:7001", "n2:7101")
    );
    for bad in [
        "",
        "1@a:1",
        "0@a:1/b:2",
        "x@a:1/b:2",
        "1@a:1/b:2,1@c:1/d:2",
        "1@/b:2",
    ] {
        assert!(parse_members(bad, 1, 2).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn placement_is_planned_for_the_new_members_the_same_way_on_every_node() {
    for ids in [vec![1], vec![1, 2, 3], vec![5, 6, 7, 8, 9]] {
        let m = members(&ids);
        let p = plan_placement(&source(), &m, "new".into());
        assert_eq!(p, plan_placement(&source(), &m, "new".into()));
        assert_eq!(p.cluster_id.as_deref(), Some("new"));
        assert_eq!(p.members.len(), ids.len());
        assert_eq!(p.shards.len(), 8);
        let want = ids.len().min(3);
        for s in &p.shards {
            assert_eq!(s.replicas.len(), want, "{s:?}");
            assert!(s.replicas.iter().all(|r| m.contains_key(r)));
            assert!(s.epoch > 7, "epochs move past the source's");
        }
        // Replicas spread evenly over the members.
        let counts: Vec<usize> = ids.iter().map(|id| p.shards_of(*id).len()).collect();
        let (lo, hi) = (counts.iter().min(), counts.iter().max());
        assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{counts:?}");
        // A retired id that is a member again is not retired any more.
        assert_eq!(p.retired.contains(&9), !ids.contains(&9));
    }
}

#[test]
fn cluster_id_depends_on_file_and_members() {
    let a = new_cluster_id("f1", &members(&[1, 2, 3]));
    assert_eq!(a, new_cluster_id("f1", &members(&[1, 2, 3])));
    assert_ne!(a, new_cluster_id("f2", &members(&[1, 2, 3])));
    assert_ne!(a, new_cluster_id("f1", &members(&[1, 2])));
    assert_eq!(a.len(), 16);
}
