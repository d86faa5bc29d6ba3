use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn meta(path: &str, size: u64, h: u8) -> ItemMeta {
    ItemMeta {
        path: path.into(),
        size,
        sha256: format!("{:064x}", h),
        width: 10 + u32::from(h),
        height: 20,
    }
}

fn create(s: &mut DatasetState, name: &str) -> DatasetResponse {
    s.apply(DatasetCommand::Create {
        name: name.into(),
        path: "imgs".into(),
        glob: "**/*.png".into(),
        queue: "datasets".into(),
        now_ms: 1,
    })
}

fn begin(s: &mut DatasetState, name: &str) -> u64 {
    match s.apply(DatasetCommand::BeginScan {
        name: name.into(),
        job: "j".into(),
        now_ms: 2,
    }) {
        DatasetResponse::ScanBegun { generation } => generation,
        other => panic!("{other:?}"),
    }
}

fn page(
    s: &DatasetState,
    name: &str,
    after: Option<&str>,
    limit: usize,
    f: ItemFilter,
) -> ItemsPage {
    match s.query(&DatasetQuery::Items {
        name: name.into(),
        after: after.map(String::from),
        until: None,
        limit,
        filter: f,
    }) {
        DatasetQueryResult::Items(Some(p)) => p,
        other => panic!("{other:?}"),
    }
}

#[test]
fn create_scan_attach_and_delete() {
    let mut s = DatasetState::default();
    assert!(matches!(create(&mut s, "a"), DatasetResponse::Created(_)));
    assert_eq!(
        create(&mut s, "a"),
        DatasetResponse::Rejected(DatasetError::AlreadyExists("a".into()))
    );
    let g = begin(&mut s, "a");
    assert_eq!(g, 1);
    let r = s.apply(DatasetCommand::PutItems {
        name: "a".into(),
        generation: g,
        items: vec![meta("imgs/x.png", 5, 1), meta("imgs/y.jpg", 7, 2)],
        now_ms: 3,
    });
    assert_eq!(
        r,
        DatasetResponse::Put {
            added: 2,
            updated: 0,
            unchanged: 0
        }
    );
    let r = s.apply(DatasetCommand::AttachOutputs {
        name: "a".into(),
        items: vec![
            Attach {
                path: "imgs/x.png".into(),
                outputs: Outputs {
                    caption: Some("a cat".into()),
                    ..Outputs::default()
                },
            },
            Attach {
                path: "imgs/nope.png".into(),
                outputs: Outputs::default(),
            },
        ],
        now_ms: 4,
    });
    assert_eq!(
        r,
        DatasetResponse::Attached {
            updated: 1,
            missing: vec!["imgs/nope.png".into()]
        }
    );
    let captioned = ItemFilter {
        has_caption: Some(true),
        ..ItemFilter::default()
    };
    let p = page(&s, "a", None, 10, captioned);
    assert_eq!(p.items.len(), 1);
    assert_eq!(p.items[0].outputs.caption.as_deref(), Some("a cat"));
    let jpg = ItemFilter {
        ext: Some("JPG".into()),
        ..ItemFilter::default()
    };
    assert_eq!(
        page(&s, "a", None, 10, jpg).items[0].meta.path,
        "imgs/y.jpg"
    );
    // A changed file loses its outputs; an unchanged one keeps them.
    let g2 = begin(&mut s, "a");
    // Writes of the older scan are refused.
    assert!(matches!(
        s.apply(DatasetCommand::RemoveItems {
            name: "a".into(),
            generation: g,
            paths: vec!["imgs/x.png".into()],
            now_ms: 5
        }),
        DatasetResponse::Rejected(DatasetError::StaleScan { .. })
    ));
    let r = s.apply(DatasetCommand::PutItems {
        name: "a".into(),
        generation: g2,
        items: vec![meta("imgs/x.png", 5, 1), meta("imgs/y.jpg", 9, 3)],
        now_ms: 6,
    });
    assert_eq!(
        r,
        DatasetResponse::Put {
            added: 0,
            updated: 1,
            unchanged: 1
        }
    );
    let d = s.def("a").unwrap();
    assert_eq!((d.items, d.bytes), (2, 14));
    assert_eq!(
        page(&s, "a", None, 10, ItemFilter::default()).items[0]
            .outputs
            .caption
            .as_deref(),
        Some("a cat")
    );
    s.apply(DatasetCommand::FinishScan {
        name: "a".into(),
        generation: g2,
        error: None,
        now_ms: 7,
    });
    let d = s.def("a").unwrap();
    assert_eq!(d.scan.state, ScanState::Succeeded);
    assert_eq!((d.scan.added, d.scan.updated, d.scan.removed), (0, 1, 0));
    // Finished: no more writes of that scan.
    assert!(matches!(
        s.apply(DatasetCommand::PutItems {
            name: "a".into(),
            generation: g2,
            items: vec![],
            now_ms: 8
        }),
        DatasetResponse::Rejected(DatasetError::StaleScan { .. })
    ));
    assert_eq!(
        s.apply(DatasetCommand::Delete { name: "a".into() }),
        DatasetResponse::Deleted { items: 2 }
    );
    assert_eq!(s, DatasetState::default());
}

#[test]
fn bad_input_is_rejected_without_change() {
    let mut s = DatasetState::default();
    for (name, path, glob) in [
        ("", "a", "*"),
        ("a/b", "a", "*"),
        ("ok", "/etc", "*"),
        ("ok", "a/../..", "*"),
        ("ok", "a", ""),
        ("ok", "a", "../*"),
    ] {
        let r = s.apply(DatasetCommand::Create {
            name: name.into(),
            path: path.into(),
            glob: glob.into(),
            queue: "q".into(),
            now_ms: 1,
        });
        assert!(
            matches!(r, DatasetResponse::Rejected(DatasetError::Invalid(_))),
            "{name} {path} {glob}: {r:?}"
        );
    }
    assert_eq!(s, DatasetState::default());
    create(&mut s, "a");
    let g = begin(&mut s, "a");
    let before = s.clone();
    let mut bad = meta("x.png", 1, 1);
    bad.sha256 = "XYZ".into();
    let r = s.apply(DatasetCommand::PutItems {
        name: "a".into(),
        generation: g,
        items: vec![meta("ok.png", 1, 1), bad],
        now_ms: 3,
    });
    assert!(matches!(
        r,
        DatasetResponse::Rejected(DatasetError::Invalid(_))
    ));
    assert_eq!(s, before, "a batch with one bad item changes nothing");
    let r = s.apply(DatasetCommand::Delete { name: "zz".into() });
    assert_eq!(
        r,
        DatasetResponse::Rejected(DatasetError::NotFound("zz".into()))
    );
}

#[test]
fn paging_walks_every_item_once() {
    let mut s = DatasetState::default();
    create(&mut s, "a");
    let g = begin(&mut s, "a");
    let items: Vec<_> = (0..25)
        .map(|i| meta(&format!("p{i:02}.png"), i, i as u8))
        .collect();
    s.apply(DatasetCommand::PutItems {
        name: "a".into(),
        generation: g,
        items,
        now_ms: 3,
    });
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let p = page(&s, "a", after.as_deref(), 7, ItemFilter::default());
        seen.extend(p.items.iter().map(|i| i.meta.path.clone()));
        match p.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let want: Vec<_> = (0..25).map(|i| format!("p{i:02}.png")).collect();
    assert_eq!(seen, want);
    assert_eq!(
        s.query(&DatasetQuery::Items {
            name: "nope".into(),
            after: None,
            until: None,
            limit: 5,
            filter: ItemFilter::default()
        }),
        DatasetQueryResult::Items(None)
    );
}

/// A model: per dataset, the current generation, whether it is running,
/// and path -> (meta, caption).
/// Per path: the scan's facts and the caption.
type ModelItems = BTreeMap<String, (ItemMeta, Option<String>)>;

#[derive(Default, Debug)]
struct Model {
    sets: BTreeMap<String, (u64, bool, ModelItems)>,
}

fn arb_cmd() -> impl Strategy<Value = DatasetCommand> {
    let name = prop::sample::select(vec!["a", "b"]).prop_map(String::from);
    let path = (0u8..6).prop_map(|i| format!("d/f{i}.png"));
    let m = (path.clone(), 0u64..4, 0u8..3).prop_map(|(p, sz, h)| meta(&p, sz, h));
    prop_oneof![
        name.clone().prop_map(|name| DatasetCommand::Create {
            name,
            path: "d".into(),
            glob: "*.png".into(),
            queue: "q".into(),
            now_ms: 1
        }),
        name.clone()
            .prop_map(|name| DatasetCommand::Delete { name }),
        name.clone().prop_map(|name| DatasetCommand::BeginScan {
            name,
            job: "j".into(),
            now_ms: 2
        }),
        (name.clone(), 0u64..4, prop::collection::vec(m, 0..4)).prop_map(
            |(name, generation, items)| {
                DatasetCommand::PutItems {
                    name,
                    generation,
                    items,
                    now_ms: 3,
                }
            }
        ),
        (
            name.clone(),
            0u64..4,
            prop::collection::vec(path.clone(), 0..4)
        )
            .prop_map(|(name, generation, paths)| DatasetCommand::RemoveItems {
                name,
                generation,
                paths,
                now_ms: 4
            }),
        (name.clone(), 0u64..4).prop_map(|(name, generation)| DatasetCommand::FinishScan {
            name,
            generation,
            error: None,
            now_ms: 5
        }),
        (name, path, prop::option::of("[a-z]{0,3}")).prop_map(|(name, path, c)| {
            DatasetCommand::AttachOutputs {
                name,
                items: vec![Attach {
                    path,
                    outputs: Outputs {
                        caption: c,
                        ..Outputs::default()
                    },
                }],
                now_ms: 6,
            }
        }),
    ]
}

impl Model {
    fn apply(&mut self, c: &DatasetCommand) {
        use DatasetCommand as C;
        match c {
            C::Create { name, .. } => {
                self.sets
                    .entry(name.clone())
                    .or_insert((0, false, BTreeMap::new()));
            }
            C::Delete { name } => {
                self.sets.remove(name);
            }
            C::BeginScan { name, .. } => {
                if let Some(d) = self.sets.get_mut(name) {
                    d.0 += 1;
                    d.1 = true;
                }
            }
            C::PutItems {
                name,
                generation,
                items,
                ..
            } => {
                if let Some(d) = self
                    .sets
                    .get_mut(name)
                    .filter(|d| d.0 == *generation && d.1)
                {
                    for m in items {
                        match d.2.get_mut(&m.path) {
                            Some(e) if e.0 == *m => {}
                            _ => {
                                d.2.insert(m.path.clone(), (m.clone(), None));
                            }
                        }
                    }
                }
            }
            C::RemoveItems {
                name,
                generation,
                paths,
                ..
            } => {
                if let Some(d) = self
                    .sets
                    .get_mut(name)
                    .filter(|d| d.0 == *generation && d.1)
                {
                    for p in paths {
                        d.2.remove(p);
                    }
                }
            }
            C::FinishScan {
                name, generation, ..
            } => {
                if let Some(d) = self
                    .sets
                    .get_mut(name)
                    .filter(|d| d.0 == *generation && d.1)
                {
                    d.1 = false;
                }
            }
            C::AttachOutputs { name, items, .. } => {
                if let Some(d) = self.sets.get_mut(name) {
                    for a in items {
                        if let (Some(e), Some(c)) = (d.2.get_mut(&a.path), &a.outputs.caption) {
                            e.1 = (!c.is_empty()).then(|| c.clone());
                        }
                    }
                }
            }
            C::ScanJob { .. } => {}
        }
    }
}

proptest! {
    #[test]
    fn apply_matches_the_model_and_snapshots_round_trip(cmds in prop::collection::vec(arb_cmd(), 0..60)) {
        let mut s = DatasetState::default();
        let mut m = Model::default();
        for c in &cmds {
            s.apply(c.clone());
            m.apply(c);
            let bytes = s.snapshot().unwrap();
            prop_assert_eq!(&DatasetState::restore(&bytes).unwrap(), &s);
        }
        let names: Vec<_> = s.defs().map(|d| d.name.clone()).collect();
        let want: Vec<_> = m.sets.keys().cloned().collect();
        prop_assert_eq!(names, want);
        for (name, (generation, running, items)) in &m.sets {
            let d = s.def(name).unwrap();
            prop_assert_eq!(d.scan.generation, *generation);
            prop_assert_eq!(d.scan.state == ScanState::Running, *running);
            prop_assert_eq!(d.items, items.len() as u64);
            prop_assert_eq!(d.bytes, items.values().map(|e| e.0.size).sum::<u64>());
            let got: BTreeMap<_, _> = s
                .items(name)
                .map(|m| m.iter().map(|(p, it)| (p.clone(), (it.meta.clone(), it.outputs.caption.clone()))).collect())
                .unwrap_or_default();
            prop_assert_eq!(&got, items);
        }
        // Same commands, same state: apply is a function of the commands.
        let mut again = DatasetState::default();
        for c in &cmds {
            again.apply(c.clone());
        }
        prop_assert_eq!(again, s);
    }
}
