//! `channel.*`: joining and leaving channels, and who is in them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::team::PresenceStatus;
use super::{event, from, Event};

/// `channel.subscribe` and `channel.unsubscribe`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct ChannelsData {
    /// Channel names (`namespace:id`), at most `max_channels`.
    #[schemars(length(min = 1))]
    channels: Vec<String>,
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
    event!("channel.subscribe", from::CLIENT, Server, None, ChannelsData,
        "Join channels; each is answered on its own.", {"channels": ["conversation:c1", "team:t1"]}),
    event!("channel.unsubscribe", from::CLIENT, Server, None, ChannelsData,
        "Leave channels.", {"channels": ["team:t1"]}),
    event!("channel.subscribed", from::SERVER, Delivered, Required, SubscribedData,
        "Joined one channel: who is present.", {"presence": ["alice", "bob"], "presence_count": 2}),
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
