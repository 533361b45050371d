//! The messages between the control thread and the etcd helper thread.

use control::cluster::KvOp;

/// The control thread → the etcd helper.
// Without the `cluster` feature no helper exists to read or build these.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
#[derive(Debug)]
pub(crate) enum ClusterCmd {
    /// Write these keys if nothing compared changed after `based_on`.
    Write {
        /// Matches the `Written` answer.
        id: u64,
        /// What to write.
        ops: Vec<KvOp>,
        /// Keys the change depends on.
        keys: Vec<String>,
        /// The config revision the change was validated against.
        based_on: i64,
        /// `If-Match`: nothing under the config prefix may have changed.
        strict: bool,
    },
    /// This node's workers applied this config revision.
    Applied(i64),
    /// Answer once every registered node applied `revision` (bounded).
    Wait {
        /// Matches the `Waited` answer.
        id: u64,
        /// The revision.
        revision: i64,
    },
}

/// What a write came to.
// Without the `cluster` feature no helper exists to read or build these.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
#[derive(Debug)]
pub(crate) enum WriteResult {
    /// Committed at this revision.
    Committed(i64),
    /// Something compared changed (up to this revision): catch up first.
    Conflict(i64),
    /// etcd did not answer: the link is down.
    Unavailable(String),
    /// etcd refused this write (too large, not permitted…): the link is up.
    Refused(String),
}

/// A registered node.
// Without the `cluster` feature no helper exists to read or build these.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
#[derive(Debug, Clone)]
pub(crate) struct NodeInfo {
    /// Its node id.
    pub id: String,
    /// The config revision it has applied.
    pub revision: i64,
    /// Its ringway version.
    pub version: String,
    /// When it last wrote its registration (Unix seconds).
    pub heartbeat_at: u64,
    /// Its process id.
    pub pid: u64,
}

/// The etcd helper → the control thread.
// Without the `cluster` feature no helper exists to read or build these.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
#[derive(Debug)]
pub(crate) enum ClusterEvent {
    /// Every config key (a first load, or a reload after a compaction);
    /// `revision`: the newest among them.
    Loaded { kvs: Vec<(String, Vec<u8>)>, revision: i64 },
    /// Keys changed (`None`: deleted), up to `revision`.
    Changes { events: Vec<(String, Option<Vec<u8>>)>, revision: i64 },
    /// A write's result.
    Written { id: u64, result: WriteResult },
    /// The link to etcd came up or went down.
    Link { connected: bool, error: Option<String> },
    /// The registered nodes.
    Nodes(Vec<NodeInfo>),
    /// A cluster-wide wait ended.
    Waited { id: u64, applied: Vec<String>, laggards: Vec<String> },
}
