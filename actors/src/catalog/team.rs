//! `team.*`: the team's activity feed, notifications and each member's
//! status on a `team:` channel (seed 004 §6).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{event, from, Event};

/// Longest status text, characters.
pub const MAX_STATUS_TEXT: usize = 140;

/// A member's status on a team channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    /// Around.
    Online,
    /// Idle.
    Away,
    /// Do not disturb.
    Busy,
    /// Gone (also when their last connection leaves).
    Offline,
}

/// `team.presence.update`: from a client, sets its user's status; from the
/// server, tells the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TeamPresenceUpdate {
    /// The status.
    pub status: PresenceStatus,
    /// A short note ("in a meeting").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 140))]
    pub text: Option<String>,
    /// Set by the server: whose status it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// `team.activity`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct ActivityData {
    /// Who did it (a user or an agent).
    actor_id: String,
    /// What, as a verb: `created_task`, `commented`, `completed`.
    action: String,
    /// One line for the feed.
    #[serde(default)]
    summary: Option<String>,
    /// What it was done to.
    #[serde(default)]
    target: Option<Value>,
    /// When, RFC 3339.
    #[serde(default)]
    at: Option<String>,
}

/// `team.notification`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct NotificationData {
    /// The headline.
    title: String,
    /// More text.
    #[serde(default)]
    body: Option<String>,
    /// How loud.
    #[serde(default)]
    level: Option<Level>,
    /// Where it leads in the app.
    #[serde(default)]
    link: Option<String>,
    /// Its id, to mark it read.
    #[serde(default)]
    notification_id: Option<String>,
}

/// A notification's level.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Level {
    Info,
    Success,
    Warning,
    Error,
}

/// The events of this family.
pub(super) const EVENTS: &[Event] = &[
    event!("team.presence.update", from::CLIENT_AND_SERVER, Server, Required, TeamPresenceUpdate,
        "A member's status on a team channel: a client sets its own, the server tells the channel (user_id set).",
        {"status": "busy", "text": "in a meeting"}),
    event!("team.activity", from::BACKEND, Delivered, Required, ActivityData,
        "An entry of the team's activity feed.",
        {"actor_id": "alice", "action": "completed_task", "summary": "Alice completed “Draft Q3 plan”", "target": {"task_id": "t-7"}}),
    event!("team.notification", from::BACKEND, Delivered, Required, NotificationData,
        "A notification for the team.", {"title": "Deploy finished", "level": "success"}),
];
