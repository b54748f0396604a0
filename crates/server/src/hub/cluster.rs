//! Presence across nodes: what every other node has (its users and channel members, kept
//! from its [`PresenceReport`]s) and this node's own share, reported to them.
//!
//! Each node reports what changed about every 50 ms and everything it has, with its
//! counters, every third of the TTL (the heartbeat). Reports carry absolute counts and a
//! sequence number; a node that misses one asks for the sender's whole presence again. A
//! node not heard from for the TTL (killed, cut off) is forgotten: its users leave.
//!
//! `user_joined` / `user_left` follow the cluster-wide count of a user's connections in a
//! channel as each node sees it: a node tells its own subscribers when that count goes
//! from 0 to 1 or back. Two first joins on two nodes in the same instant may both be
//! announced; the member lists agree once the reports have crossed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::broker::{NodeLoad, PresenceReport};

/// Entries per report at most: a whole presence of many users travels in parts well under
/// NATS's default 1 MB message limit.
const REPORT_ENTRIES: usize = 2000;
/// `[user, connections]` in a report.
type UserCount = (String, u32);
/// `[channel, user, connections]` in a report.
type MemberCount = (String, String, u32);

/// A node asks another for its whole presence at most this often.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// Connection counts of one node: per user, and per channel and user.
#[derive(Debug, Default)]
struct Share {
    users: HashMap<Arc<str>, u32>,
    members: HashMap<Arc<str>, HashMap<Arc<str>, u32>>,
}

impl Share {
    fn user(&self, user: &str) -> u32 {
        self.users.get(user).copied().unwrap_or(0)
    }

    fn member(&self, channel: &str, user: &str) -> u32 {
        self.members
            .get(channel)
            .and_then(|members| members.get(user))
            .copied()
            .unwrap_or(0)
    }

    fn set_user(&mut self, user: Arc<str>, connections: u32) {
        if connections == 0 {
            self.users.remove(&user);
        } else {
            self.users.insert(user, connections);
        }
    }

    fn set_member(&mut self, channel: Arc<str>, user: Arc<str>, connections: u32) {
        if connections == 0 {
            if let Some(members) = self.members.get_mut(&channel) {
                members.remove(&user);
                if members.is_empty() {
                    self.members.remove(&channel);
                }
            }
        } else {
            self.members
                .entry(channel)
                .or_default()
                .insert(user, connections);
        }
    }

    fn member_keys(&self) -> impl Iterator<Item = (Arc<str>, Arc<str>)> + '_ {
        self.members.iter().flat_map(|(channel, members)| {
            members
                .keys()
                .map(move |user| (channel.clone(), user.clone()))
        })
    }
}

/// Another node as this one knows it.
#[derive(Debug)]
struct Remote {
    share: Share,
    /// The last report applied; `None` until its whole presence has arrived.
    seq: Option<u64>,
    /// A whole presence arriving in parts, and the `seq` of the latest part.
    incoming: Option<(Share, u64)>,
    /// When it was last heard from.
    heard: Instant,
    /// When its whole presence was last asked for.
    asked: Option<Instant>,
    load: Option<NodeLoad>,
}

/// A user's first connection in a channel across the cluster, or their last one gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) channel: Arc<str>,
    pub(crate) user: Arc<str>,
    pub(crate) joined: bool,
}

/// What applying a report did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// First joins and last leaves it caused.
    pub(crate) changes: Vec<Change>,
    /// The sender's whole presence is needed (a report was missed).
    pub(crate) ask_whole: bool,
}

/// Another node's counters, for `stats`.
#[derive(Debug, Clone)]
pub(crate) struct NodeReport {
    pub(crate) node: String,
    pub(crate) load: Option<NodeLoad>,
    pub(crate) age: Duration,
}

#[derive(Debug, Default)]
struct View {
    own: Share,
    /// The last report sent.
    seq: u64,
    changed_users: HashSet<Arc<str>>,
    changed_members: HashSet<(Arc<str>, Arc<str>)>,
    /// Another node asked for everything.
    whole_wanted: bool,
    nodes: HashMap<String, Remote>,
}

impl View {
    /// The user's connections in the channel on every node.
    fn total(&self, channel: &str, user: &str) -> u32 {
        self.nodes
            .values()
            .map(|remote| remote.share.member(channel, user))
            .fold(self.own.member(channel, user), u32::saturating_add)
    }

    /// The totals of `keys`, in order.
    fn totals(&self, keys: &[(Arc<str>, Arc<str>)]) -> Vec<u32> {
        keys.iter()
            .map(|(channel, user)| self.total(channel, user))
            .collect()
    }
}

/// The changes between two totals of the same keys.
fn changes(keys: Vec<(Arc<str>, Arc<str>)>, before: &[u32], after: &[u32]) -> Vec<Change> {
    keys.into_iter()
        .zip(before.iter().zip(after))
        .filter_map(|((channel, user), (&before, &after))| {
            let joined = match (before, after) {
                (0, 1..) => true,
                (1.., 0) => false,
                _ => return None,
            };
            Some(Change {
                channel,
                user,
                joined,
            })
        })
        .collect()
}

/// This node's and every other node's presence.
#[derive(Debug)]
pub(crate) struct ClusterView {
    node: String,
    ttl: Duration,
    view: Mutex<View>,
}

impl ClusterView {
    /// The view of node `node`, forgetting other nodes silent for `ttl`.
    pub(crate) fn new(node: &str, ttl: Duration) -> ClusterView {
        ClusterView {
            node: node.to_owned(),
            ttl,
            view: Mutex::new(View {
                // Everyone learns this node's (empty) presence from its first report.
                whole_wanted: true,
                ..View::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, View> {
        // Nothing here can leave the view half-changed on a panic: keep going with it.
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This node's name.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// How often this node sends its whole presence and counters.
    pub(crate) fn heartbeat(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(100))
    }

    /// Records the user's connection count on this node.
    pub(crate) fn set_own_user(&self, user: &Arc<str>, connections: usize) {
        let mut view = self.lock();
        view.own
            .set_user(user.clone(), u32::try_from(connections).unwrap_or(u32::MAX));
        view.changed_users.insert(user.clone());
    }

    /// Records the user's connection count in `channel` on this node; returns whether
    /// other nodes have the user in the channel.
    pub(crate) fn set_own_member(&self, channel: &str, user: &Arc<str>, connections: u32) -> bool {
        let mut view = self.lock();
        let channel: Arc<str> = Arc::from(channel);
        view.own
            .set_member(channel.clone(), user.clone(), connections);
        let elsewhere = view
            .nodes
            .values()
            .any(|remote| remote.share.member(&channel, user) > 0);
        view.changed_members.insert((channel, user.clone()));
        elsewhere
    }

    /// The user's connections on other nodes.
    pub(crate) fn user_elsewhere(&self, user: &str) -> usize {
        let view = self.lock();
        view.nodes
            .values()
            .map(|remote| remote.share.user(user) as usize)
            .sum()
    }

    /// Users with a connection on another node.
    pub(crate) fn users_elsewhere(&self) -> HashSet<String> {
        let view = self.lock();
        view.nodes
            .values()
            .flat_map(|remote| remote.share.users.keys().map(|user| user.to_string()))
            .collect()
    }

    /// Connections on other nodes.
    pub(crate) fn connections_elsewhere(&self) -> usize {
        let view = self.lock();
        view.nodes
            .values()
            .flat_map(|remote| remote.share.users.values())
            .map(|&n| n as usize)
            .sum()
    }

    /// The channel's members on other nodes, with their connection counts there.
    pub(crate) fn members_elsewhere(&self, channel: &str) -> HashMap<String, u32> {
        let view = self.lock();
        let mut members: HashMap<String, u32> = HashMap::new();
        for remote in view.nodes.values() {
            if let Some(share) = remote.share.members.get(channel) {
                for (user, &n) in share {
                    let count = members.entry(user.to_string()).or_default();
                    *count = count.saturating_add(n);
                }
            }
        }
        members
    }

    /// Every other node heard from, with its last counters.
    pub(crate) fn nodes(&self, now: Instant) -> Vec<NodeReport> {
        let view = self.lock();
        let mut nodes: Vec<NodeReport> = view
            .nodes
            .iter()
            .map(|(node, remote)| NodeReport {
                node: node.clone(),
                load: remote.load,
                age: now.saturating_duration_since(remote.heard),
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        nodes
    }

    /// Another node asked for this node's whole presence.
    pub(crate) fn want_whole(&self) {
        self.lock().whole_wanted = true;
    }

    /// Takes in another node's report.
    pub(crate) fn apply(&self, report: PresenceReport, now: Instant) -> Applied {
        let mut view = self.lock();
        let view = &mut *view;
        let remote = view
            .nodes
            .entry(report.node.clone())
            .or_insert_with(|| Remote {
                share: Share::default(),
                seq: None,
                incoming: None,
                heard: now,
                asked: None,
                load: None,
            });
        remote.heard = now;
        if report.load.is_some() {
            remote.load = report.load;
        }
        if report.full {
            return apply_whole(view, report, now);
        }
        match remote.seq {
            Some(last) if report.seq == last.saturating_add(1) => {}
            Some(last) if report.seq <= last => return Applied::default(),
            _ => return ask(remote, now),
        }
        remote.seq = Some(report.seq);
        let mut changes = Vec::new();
        for (user, n) in report.users {
            if let Some(remote) = view.nodes.get_mut(&report.node) {
                remote.share.set_user(Arc::from(user), n);
            }
        }
        for (channel, user, n) in report.members {
            let (channel, user) = (Arc::<str>::from(channel), Arc::<str>::from(user));
            let before = view.total(&channel, &user);
            if let Some(remote) = view.nodes.get_mut(&report.node) {
                remote.share.set_member(channel.clone(), user.clone(), n);
            }
            let after = view.total(&channel, &user);
            changes.extend(self::changes(vec![(channel, user)], &[before], &[after]));
        }
        Applied {
            changes,
            ask_whole: false,
        }
    }

    /// Forgets the nodes not heard from for the TTL; returns the leaves that causes.
    pub(crate) fn expire(&self, now: Instant) -> Vec<Change> {
        let mut view = self.lock();
        let silent: Vec<String> = view
            .nodes
            .iter()
            .filter(|(_, remote)| now.saturating_duration_since(remote.heard) > self.ttl)
            .map(|(node, _)| node.clone())
            .collect();
        let mut changes = Vec::new();
        for node in silent {
            tracing::warn!(%node, ttl = ?self.ttl, "a node went silent: its users leave");
            let keys: Vec<_> = view
                .nodes
                .get(&node)
                .map(|remote| remote.share.member_keys().collect())
                .unwrap_or_default();
            let before = view.totals(&keys);
            view.nodes.remove(&node);
            let after = view.totals(&keys);
            changes.extend(self::changes(keys, &before, &after));
        }
        changes
    }

    /// Whether this node speaks for the cluster about nodes that went silent (the first
    /// name among the live nodes), so that one webhook goes out for each leave.
    pub(crate) fn speaks_for_cluster(&self) -> bool {
        let view = self.lock();
        view.nodes.keys().all(|node| *node > self.node)
    }

    /// The reports to send now: the whole presence if asked for, else what changed; with
    /// `load` (a heartbeat) even when nothing did.
    pub(crate) fn reports(&self, load: Option<NodeLoad>) -> Vec<PresenceReport> {
        let mut view = self.lock();
        let view = &mut *view;
        let whole = std::mem::take(&mut view.whole_wanted);
        let (users, members): (Vec<UserCount>, Vec<MemberCount>) = if whole {
            view.changed_users.clear();
            view.changed_members.clear();
            (
                view.own
                    .users
                    .iter()
                    .map(|(user, &n)| (user.to_string(), n))
                    .collect(),
                view.own
                    .members
                    .iter()
                    .flat_map(|(channel, members)| {
                        members
                            .iter()
                            .map(|(user, &n)| (channel.to_string(), user.to_string(), n))
                    })
                    .collect(),
            )
        } else {
            let users = view
                .changed_users
                .drain()
                .map(|user| {
                    let n = view.own.user(&user);
                    (user.to_string(), n)
                })
                .collect();
            let members = view
                .changed_members
                .drain()
                .map(|(channel, user)| {
                    let n = view.own.member(&channel, &user);
                    (channel.to_string(), user.to_string(), n)
                })
                .collect();
            (users, members)
        };
        if !whole && users.is_empty() && members.is_empty() && load.is_none() {
            return Vec::new();
        }
        let mut reports = Vec::new();
        let mut users = users.into_iter().peekable();
        let mut members = members.into_iter().peekable();
        loop {
            view.seq += 1;
            let mut report = PresenceReport {
                node: self.node.clone(),
                seq: view.seq,
                full: whole,
                part: u32::try_from(reports.len()).unwrap_or(u32::MAX),
                ..PresenceReport::default()
            };
            report.users.extend(users.by_ref().take(REPORT_ENTRIES));
            let room = REPORT_ENTRIES - report.users.len();
            report.members.extend(members.by_ref().take(room));
            report.done = users.peek().is_none() && members.peek().is_none();
            let done = report.done;
            reports.push(report);
            if done {
                break;
            }
        }
        if let Some(last) = reports.last_mut() {
            last.load = load;
        }
        reports
    }
}

/// Asks for a node's whole presence, unless asked just now.
fn ask(remote: &mut Remote, now: Instant) -> Applied {
    let due = remote
        .asked
        .is_none_or(|asked| now.saturating_duration_since(asked) >= ASK_AGAIN_AFTER);
    if due {
        remote.asked = Some(now);
    }
    Applied {
        changes: Vec::new(),
        ask_whole: due,
    }
}

/// One part of a node's whole presence; the last one replaces what was known of it.
fn apply_whole(view: &mut View, report: PresenceReport, now: Instant) -> Applied {
    let Some(remote) = view.nodes.get_mut(&report.node) else {
        return Applied::default();
    };
    if report.part == 0 {
        remote.incoming = Some((Share::default(), report.seq));
    }
    let Some((share, last)) = remote.incoming.as_mut() else {
        return ask(remote, now);
    };
    if report.part > 0 && report.seq != last.saturating_add(1) {
        remote.incoming = None;
        return ask(remote, now);
    }
    *last = report.seq;
    for (user, n) in report.users {
        share.set_user(Arc::from(user), n);
    }
    for (channel, user, n) in report.members {
        share.set_member(Arc::from(channel), Arc::from(user), n);
    }
    if !report.done {
        return Applied::default();
    }
    let Some((share, seq)) = remote.incoming.take() else {
        return Applied::default();
    };
    let mut keys: HashSet<(Arc<str>, Arc<str>)> = remote.share.member_keys().collect();
    keys.extend(share.member_keys());
    let keys: Vec<_> = keys.into_iter().collect();
    let before = view.totals(&keys);
    if let Some(remote) = view.nodes.get_mut(&report.node) {
        remote.share = share;
        remote.seq = Some(seq);
        remote.asked = None;
    }
    let after = view.totals(&keys);
    Applied {
        changes: changes(keys, &before, &after),
        ask_whole: false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn user(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    /// Sends every report of `from` to `to`; returns the changes `to` saw.
    fn deliver(from: &ClusterView, to: &ClusterView, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        for report in from.reports(None) {
            let applied = to.apply(report, now);
            assert!(!applied.ask_whole);
            changes.extend(applied.changes);
        }
        changes
    }

    #[test]
    fn first_join_and_last_leave_across_nodes() {
        let now = Instant::now();
        let a = ClusterView::new("a", Duration::from_secs(30));
        let b = ClusterView::new("b", Duration::from_secs(30));
        assert!(deliver(&a, &b, now).is_empty());
        assert!(deliver(&b, &a, now).is_empty());

        // Ann joins on a: b's subscribers hear of it.
        assert!(!a.set_own_member("room", &user("ann"), 1));
        a.set_own_user(&user("ann"), 1);
        let seen = deliver(&a, &b, now);
        assert_eq!(
            seen,
            vec![Change {
                channel: Arc::from("room"),
                user: user("ann"),
                joined: true
            }]
        );
        assert_eq!(b.user_elsewhere("ann"), 1);
        assert_eq!(b.members_elsewhere("room").get("ann"), Some(&1));

        // Ann joins on b too: not a first join anywhere.
        assert!(b.set_own_member("room", &user("ann"), 1));
        assert!(deliver(&b, &a, now).is_empty());

        // She leaves a: b still has her.
        assert!(a.set_own_member("room", &user("ann"), 0));
        a.set_own_user(&user("ann"), 0);
        assert!(deliver(&a, &b, now).is_empty());
        assert!(b.members_elsewhere("room").is_empty());
        assert_eq!(b.user_elsewhere("ann"), 0);

        // She leaves b: a hears of the last leave.
        assert!(!b.set_own_member("room", &user("ann"), 0));
        assert_eq!(
            deliver(&b, &a, now),
            vec![Change {
                channel: Arc::from("room"),
                user: user("ann"),
                joined: false
            }]
        );
    }

    #[test]
    fn a_missed_report_asks_for_the_whole_presence_which_then_applies() {
        let now = Instant::now();
        let a = ClusterView::new("a", Duration::from_secs(30));
        let b = ClusterView::new("b", Duration::from_secs(30));
        deliver(&a, &b, now);
        a.set_own_member("room", &user("ann"), 2);
        let lost = a.reports(None);
        assert_eq!(lost.len(), 1);
        a.set_own_member("room", &user("bob"), 1);
        let report = a.reports(None).remove(0);
        let applied = b.apply(report.clone(), now);
        assert!(applied.ask_whole, "a gap in seq asks for everything");
        assert!(b.members_elsewhere("room").is_empty());
        // Asked again right away: not repeated within a second.
        assert!(!b.apply(report, now).ask_whole);

        a.want_whole();
        let changes = deliver(&a, &b, now);
        assert_eq!(changes.len(), 2);
        assert_eq!(b.members_elsewhere("room").get("ann"), Some(&2));
        assert_eq!(b.members_elsewhere("room").get("bob"), Some(&1));
        // A duplicate of an applied report changes nothing.
        a.set_own_member("room", &user("bob"), 0);
        let report = a.reports(None).remove(0);
        assert_eq!(b.apply(report.clone(), now).changes.len(), 1);
        let again = b.apply(report, now);
        assert!(again.changes.is_empty() && !again.ask_whole);
    }

    #[test]
    fn a_large_presence_travels_in_parts_and_swaps_at_once() {
        let now = Instant::now();
        let a = ClusterView::new("a", Duration::from_secs(30));
        let b = ClusterView::new("b", Duration::from_secs(30));
        for i in 0..5000 {
            let name = user(&format!("u{i}"));
            a.set_own_member("crowd", &name, 1);
            a.set_own_user(&name, 1);
        }
        let reports = a.reports(None);
        assert!(reports.len() >= 5, "{} parts", reports.len());
        assert!(reports.iter().all(|r| r.full));
        let (last, parts) = reports.split_last().unwrap();
        for part in parts {
            assert!(!part.done);
            assert!(b.apply(part.clone(), now).changes.is_empty());
        }
        assert!(
            b.members_elsewhere("crowd").is_empty(),
            "nothing before the last part"
        );
        assert_eq!(b.apply(last.clone(), now).changes.len(), 5000);
        assert_eq!(b.members_elsewhere("crowd").len(), 5000);
        assert_eq!(b.connections_elsewhere(), 5000);
    }

    #[test]
    fn a_silent_node_is_forgotten_after_the_ttl_and_its_users_leave() {
        let start = Instant::now();
        let ttl = Duration::from_secs(30);
        let a = ClusterView::new("a", ttl);
        let b = ClusterView::new("b", ttl);
        a.set_own_member("room", &user("ann"), 1);
        a.set_own_user(&user("ann"), 1);
        deliver(&a, &b, start);
        b.set_own_member("room", &user("bob"), 1);
        assert!(!b.speaks_for_cluster(), "a comes first");

        assert!(b.expire(start + ttl).is_empty(), "not yet");
        let gone = b.expire(start + ttl + Duration::from_millis(1));
        assert_eq!(
            gone,
            vec![Change {
                channel: Arc::from("room"),
                user: user("ann"),
                joined: false
            }]
        );
        assert_eq!(b.user_elsewhere("ann"), 0);
        assert!(b.speaks_for_cluster());
        assert!(b.nodes(start).is_empty());
    }

    #[test]
    fn heartbeats_carry_counters_and_nothing_else_when_idle() {
        let now = Instant::now();
        let a = ClusterView::new("a", Duration::from_secs(30));
        let b = ClusterView::new("b", Duration::from_secs(30));
        deliver(&a, &b, now);
        assert!(a.reports(None).is_empty(), "idle and no heartbeat: silent");
        let load = NodeLoad {
            connections: 3,
            ..NodeLoad::default()
        };
        let beat = a.reports(Some(load));
        assert_eq!(beat.len(), 1);
        assert!(beat[0].users.is_empty() && beat[0].members.is_empty());
        b.apply(beat[0].clone(), now);
        let nodes = b.nodes(now);
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].load.map(|l| l.connections), Some(3));
    }
}
