//! Lineage from the ledger's recorded inputs and outputs, never from parsing SQL.
//!
//! Every ledger entry names a subject (what the step produced, e.g. `published.sales@3`,
//! `batch:7`, `contract:orders@1.0.0`), the objects it consumed (`inputs`) and other objects it
//! changed (`outputs`, e.g. `raw.orders` for an ingested batch). That gives edges
//! `input -> subject -> output`. Walks respect time: an object consumed by the entry at `seq`
//! was produced by entries before `seq` — every one of them for append-only raw stores
//! (`raw.*`), the latest one for anything else (a table rebuilt, a version replaced).

use std::collections::{BTreeMap, HashSet, VecDeque};

/// One ledger entry reduced to what lineage needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub seq: i64,
    pub event_type: String,
    pub subject: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// An object found by a walk, at its distance from the start and the entry that links it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub depth: u32,
    pub object: String,
    pub via_seq: i64,
    pub via_event: String,
}

/// Objects that only ever grow; every producer before a consumer contributed to it.
fn is_append_only(object: &str) -> bool {
    object.starts_with("raw.")
}

/// Entries that produced `object` before `before`, per the time rule above.
fn producers<'a>(steps: &'a [Step], object: &str, before: i64) -> Vec<&'a Step> {
    let mut found: Vec<&Step> = steps
        .iter()
        .filter(|s| {
            s.seq < before && (s.subject == object || s.outputs.iter().any(|o| o == object))
        })
        .collect();
    if !is_append_only(object) {
        found.sort_by_key(|s| s.seq);
        if let Some(last) = found.pop() {
            return vec![last];
        }
    }
    found
}

/// Walks upstream from `start` (which must be some entry's subject or output) for `depth` hops.
pub fn upstream(steps: &[Step], start: &str, depth: u32) -> Vec<Hop> {
    let mut out = Vec::new();
    let mut seen: HashSet<String> = HashSet::from([start.to_owned()]);
    // (object, consumer seq bound, depth of object)
    let mut queue: VecDeque<(String, i64, u32)> = VecDeque::from([(start.to_owned(), i64::MAX, 0)]);
    while let Some((object, before, d)) = queue.pop_front() {
        if d >= depth {
            continue;
        }
        for p in producers(steps, &object, before) {
            // the producing entry links its subject and its inputs to what it produced
            let mut parents: Vec<&String> = Vec::new();
            if p.subject != object {
                parents.push(&p.subject);
            } else {
                parents.extend(p.inputs.iter());
            }
            for parent in parents {
                if seen.insert(parent.clone()) {
                    out.push(Hop {
                        depth: d + 1,
                        object: parent.clone(),
                        via_seq: p.seq,
                        via_event: p.event_type.clone(),
                    });
                    // the parent existed when p ran: look at its producers before p (or at p
                    // itself when the parent is p's own subject)
                    let bound = if *parent == p.subject {
                        p.seq + 1
                    } else {
                        p.seq
                    };
                    queue.push_back((parent.clone(), bound, d + 1));
                }
            }
        }
    }
    out
}

/// Walks downstream from `start` for `depth` hops.
pub fn downstream(steps: &[Step], start: &str, depth: u32) -> Vec<Hop> {
    let mut by_seq: BTreeMap<i64, &Step> = BTreeMap::new();
    for s in steps {
        by_seq.insert(s.seq, s);
    }
    let mut out = Vec::new();
    let mut seen: HashSet<String> = HashSet::from([start.to_owned()]);
    // (object, produced-at seq, depth)
    let first = steps
        .iter()
        .filter(|s| s.subject == start || s.outputs.iter().any(|o| o == start))
        .map(|s| s.seq)
        .min()
        .unwrap_or(0);
    let mut queue: VecDeque<(String, i64, u32)> = VecDeque::from([(start.to_owned(), first, 0)]);
    while let Some((object, after, d)) = queue.pop_front() {
        if d >= depth {
            continue;
        }
        for s in by_seq.range(after..).map(|(_, s)| *s) {
            let children: Vec<&String> = if s.inputs.contains(&object) {
                std::iter::once(&s.subject).collect()
            } else if s.subject == object {
                s.outputs.iter().collect()
            } else {
                continue;
            };
            for child in children {
                if seen.insert(child.clone()) {
                    out.push(Hop {
                        depth: d + 1,
                        object: child.clone(),
                        via_seq: s.seq,
                        via_event: s.event_type.clone(),
                    });
                    queue.push_back((child.clone(), s.seq, d + 1));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(seq: i64, ev: &str, subject: &str, inputs: &[&str], outputs: &[&str]) -> Step {
        Step {
            seq,
            event_type: ev.into(),
            subject: subject.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn pipeline() -> Vec<Step> {
        vec![
            step(1, "contract_register", "contract:orders@1.0.0", &[], &[]),
            step(
                2,
                "ingest",
                "batch:1",
                &["contract:orders@1.0.0"],
                &["raw.orders"],
            ),
            step(
                3,
                "ingest",
                "batch:2",
                &["contract:orders@1.0.0"],
                &["raw.orders"],
            ),
            step(
                4,
                "publish",
                "published.daily@1",
                &["raw.orders"],
                &["published.daily"],
            ),
            step(
                5,
                "ingest",
                "batch:3",
                &["contract:orders@1.0.0"],
                &["raw.orders"],
            ),
            step(
                6,
                "publish",
                "published.top@1",
                &["published.daily@1"],
                &["published.top"],
            ),
        ]
    }

    fn objects(h: &[Hop]) -> Vec<(u32, &str)> {
        let mut v: Vec<(u32, &str)> = h.iter().map(|h| (h.depth, h.object.as_str())).collect();
        v.sort();
        v
    }

    #[test]
    fn upstream_stops_at_what_existed_then() {
        let up = upstream(&pipeline(), "published.top@1", 10);
        assert_eq!(
            objects(&up),
            vec![
                (1, "published.daily@1"),
                (2, "raw.orders"),
                (3, "batch:1"),
                (3, "batch:2"),
                (4, "contract:orders@1.0.0"),
            ],
            "batch:3 arrived after published.daily@1 and is not upstream of it"
        );
        let shallow = upstream(&pipeline(), "published.top@1", 2);
        assert_eq!(
            objects(&shallow),
            vec![(1, "published.daily@1"), (2, "raw.orders")]
        );
    }

    #[test]
    fn downstream_follows_consumers_forward() {
        let down = downstream(&pipeline(), "batch:1", 10);
        assert_eq!(
            objects(&down),
            vec![
                (1, "raw.orders"),
                (2, "published.daily@1"),
                (3, "published.daily"),
                (3, "published.top@1"),
                (4, "published.top")
            ]
        );
        let from_contract = downstream(&pipeline(), "contract:orders@1.0.0", 1);
        assert_eq!(
            objects(&from_contract),
            vec![(1, "batch:1"), (1, "batch:2"), (1, "batch:3")]
        );
    }
}
