//! `channel.*`: joining and leaving channels, and who is in them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::team::PresenceStatus;
use super::{event, from, Event};

/// `channel.unsubscribe`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct ChannelsData {
    /// Channel names (`namespace:id`), at most `max_channels`.
    #[schemars(length(min = 1))]
    channels: Vec<String>,
}

/// `channel.subscribe`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct SubscribeData {
    /// Channel names (`namespace:id`), at most `max_channels`.
    #[schemars(length(min = 1))]
    channels: Vec<String>,
    /// For channels named in `channels`: the last position the client saw,
    /// so it gets what it missed first (docs/protocol.md, Recovery).
    #[serde(default)]
    recover: Option<std::collections::BTreeMap<String, RecoverFrom>>,
}

/// A position in a channel to recover from.
#[derive(Serialize, Deserialize, JsonSchema)]
pub(crate) struct RecoverFrom {
    /// The offset of the last event received.
    pub offset: u64,
    /// The epoch it belongs to.
    #[schemars(length(min = 1, max = 64))]
    pub epoch: String,
}

/// `channel.subscribed`: one per channel joined.
#[derive(Serialize, Deserialize, JsonSchema)]
struct SubscribedData {
    /// User ids present (at most 1,000 listed).
    presence: Vec<String>,
    /// How many are present.
    presence_count: u64,
    /// On `team:` channels: the status each present user set.
    #[serde(default)]
    statuses: Option<Vec<StatusEntry>>,
    /// Channels with history: the offset the subscription starts at (the
    /// last event before it; live events follow it).
    #[serde(default)]
    offset: Option<u64>,
    /// Channels with history: the epoch of that offset.
    #[serde(default)]
    epoch: Option<String>,
    /// When recovery was asked for: whether every missed event follows.
    #[serde(default)]
    recovered: Option<bool>,
    /// When recovery was asked for: how many missed events follow.
    #[serde(default)]
    missed: Option<u64>,
}

/// One user's status in a team channel.
#[derive(Serialize, Deserialize, JsonSchema)]
struct StatusEntry {
    user_id: String,
    status: PresenceStatus,
    #[serde(default)]
    text: Option<String>,
}

/// `channel.unsubscribed`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct UnsubscribedData {
    /// Why, when the server did it: `permission_revoked`.
    #[serde(default)]
    reason: Option<String>,
}

/// `channel.presence`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct PresenceData {
    /// Who.
    user_id: String,
    /// Their first connection joined, or their last one left.
    state: PresenceState,
}

/// Joined or left.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum PresenceState {
    Joined,
    Left,
}

/// The events of this family.
pub(super) const EVENTS: &[Event] = &[
    event!("channel.subscribe", from::CLIENT, Server, None, SubscribeData,
        "Join channels, recovering what was missed since a position; each is answered on its own.",
        {"channels": ["conversation:c1", "team:t1"], "recover": {"conversation:c1": {"offset": 41, "epoch": "9f2c4a1b"}}}),
    event!("channel.unsubscribe", from::CLIENT, Server, None, ChannelsData,
        "Leave channels.", {"channels": ["team:t1"]}),
    event!("channel.subscribed", from::SERVER, Delivered, Required, SubscribedData,
        "Joined one channel: who is present, the position, what recovery found.",
        {"presence": ["alice", "bob"], "presence_count": 2, "offset": 57, "epoch": "9f2c4a1b", "recovered": true, "missed": 16}),
    event!(
        "channel.unsubscribed",
        from::SERVER,
        Delivered,
        Required,
        UnsubscribedData,
        "Left one channel (asked for, or its permission was revoked); nothing of it follows.",
        {}
    ),
    event!("channel.presence", from::SERVER, Delivered, Required, PresenceData,
        "A user's first connection joined the channel, or their last one left.",
        {"user_id": "bob", "state": "joined"}),
];
