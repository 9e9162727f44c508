// The types of nova-realtime.js, the client of nova-realtime's WebSocket
// protocol (docs/protocol.md; clients/js/README.md explains the client).
//
// The section between the catalog markers is generated from the event
// catalog (actors/src/catalog) by its tests: every event type with its
// `data`, `EventMap` (type -> frame) and `RequestMap` (what a client may
// send: type -> data). Do not edit it by hand; regenerate it with
//   NOVA_UPDATE_DOCS=1 cargo test -p nova-actors --lib catalog
// The rest is the client's API, kept in step with nova-realtime.js by hand.

/** The protocol version this client speaks. */
export declare const PROTOCOL_VERSION: 1;

/**
 * A frame from the server: an event of a channel, a reply to a request
 * (`reply_to` set), or the server's own news.
 */
export interface NovaFrame<T extends string = string, D = Record<string, unknown>> {
  /** The event's id (the same for every recipient of a published event). */
  id: string;
  /** The event type. */
  type: T;
  /** The channel, on channel events and on errors about one channel. */
  channel?: string;
  /** The payload; fields the catalog does not name pass through. */
  data: D;
  /** When the server made it: RFC 3339, UTC, milliseconds. */
  timestamp: string;
  /** On replies: the request's id. */
  reply_to?: string;
  /** In channels with history: the event's number in the channel. */
  offset?: number;
  /** On settings events: the service that made them. */
  source?: string;
}

// <catalog: made from actors/src/catalog by its tests>
/** `connection.init`: Authenticate: the first frame, with a JWT or an API key, and optionally the protocol versions and capabilities. Sent by: client. */
export interface ConnectionInitData {
  /** A configured API key. Send this or `token`, not both. */
  api_key?: string | null;
  /** Features the client understands. */
  capabilities?: string[] | null;
  /**
   * The protocol versions the client speaks: one, or a list of
   * acceptable ones. Absent: version 1.
   */
  protocol?: number | number[] | null;
  /** A JWT (HS256). Send this or `api_key`, not both. */
  token?: string | null;
  /** With the development key only: the user to act as. */
  user_id?: string | null;
}
/** A `connection.init` frame. */
export type ConnectionInitEvent = NovaFrame<'connection.init', ConnectionInitData>;

/** `connection.ack`: Authentication succeeded: who the connection is, the protocol version, capabilities and limits. Sent by: server. */
export interface ConnectionAckData {
  /** What the server implements (docs/protocol.md lists each). */
  capabilities?: string[] | null;
  /** From `/ws/{client_id}`, when the client gave one. */
  client_id?: string | null;
  /** The server's id for this connection (`GET /ws/connections`). */
  connection_id: string;
  /** When the JWT expires, RFC 3339; null for API keys. */
  expires_at?: string | null;
  /** How often the server pings. */
  heartbeat_interval_ms: number;
  /** This connection's limits. */
  limits: {
    max_channels: number;
    max_frame_bytes: number;
    max_outbound_bytes: number;
    message_burst: number;
    messages_per_second: number;
  };
  /** The protocol version chosen. */
  protocol_version: number;
  /**
   * The user's tenant (the JWT's `tenant` claim, an API key's configured
   * one); null for the default tenant.
   */
  tenant?: string | null;
  /** The authenticated user. */
  user_id: string;
}
/** A `connection.ack` frame. */
export type ConnectionAckEvent = NovaFrame<'connection.ack', ConnectionAckData>;

/** `connection.heartbeat`: Keep-alive: a client's request is answered with one (reply_to set). Sent by: client, server. */
export type ConnectionHeartbeatData = Record<string, unknown>;
/** A `connection.heartbeat` frame. */
export type ConnectionHeartbeatEvent = NovaFrame<'connection.heartbeat', ConnectionHeartbeatData>;

/** `connection.reconnect`: After a reconnect: take back channels, with the last position seen in each. Sent by: client. */
export interface ConnectionReconnectData {
  /** As in `connection.init` (first frame only). */
  api_key?: string | null;
  /** As in `connection.init`. */
  capabilities?: string[] | null;
  /**
   * The channels to take back, each with the last position the client
   * saw (`{}` when it has none: subscribed without recovery).
   */
  channels: Record<string, {
    /** The channel's epoch that offset belongs to. */
    epoch?: string | null;
    /** The offset of the last event it received. */
    offset?: number | null;
  }>;
  /** The connection the client had before, for the logs. */
  previous_connection_id?: string | null;
  /** As in `connection.init`. */
  protocol?: number | number[] | null;
  /** As in `connection.init` (first frame only). */
  token?: string | null;
  /** As in `connection.init`, with `api_key`. */
  user_id?: string | null;
}
/** A `connection.reconnect` frame. */
export type ConnectionReconnectEvent = NovaFrame<'connection.reconnect', ConnectionReconnectData>;

/** `connection.refresh`: Replace the connection's token with a fresh one for the same user, without reconnecting. Sent by: client. */
export interface ConnectionRefreshData {
  /** A fresh JWT for the same `sub`. */
  token: string;
}
/** A `connection.refresh` frame. */
export type ConnectionRefreshEvent = NovaFrame<'connection.refresh', ConnectionRefreshData>;

/** `connection.refreshed`: The refreshed token is in force. Sent by: server. */
export interface ConnectionRefreshedData {
  /** When the new token expires, RFC 3339. */
  expires_at?: string | null;
}
/** A `connection.refreshed` frame. */
export type ConnectionRefreshedEvent = NovaFrame<'connection.refreshed', ConnectionRefreshedData>;

/** `connection.expiring`: The token expires soon: refresh it or be closed with 4002. Sent by: server. */
export interface ConnectionExpiringData {
  /**
   * Milliseconds until the token expires and the connection is closed
   * with 4002.
   */
  expires_in_ms: number;
}
/** A `connection.expiring` frame. */
export type ConnectionExpiringEvent = NovaFrame<'connection.expiring', ConnectionExpiringData>;

/** `connection.error`: Why the server is about to close the connection (code = the close code). Sent by: server. */
export interface ConnectionErrorData {
  /**
   * A code of docs/protocol.md's tables (40xx, or for `connection.error`
   * the close code that follows).
   */
  code: number;
  /**
   * With 4005 for invalid `data`: each field at fault and the rule it
   * broke.
   */
  fields?: {
    /** Where: `data`, `data.stream_id`, `data.items.0.name`. */
    field: string;
    /** What: `required string`, `must be a number`, `at most 140 characters`. */
    rule: string;
  }[] | null;
  /** With 4004: the limit that was hit. */
  limit?: unknown;
  /** What went wrong, for a person. */
  message: string;
  /** With 4010: the protocol versions the server speaks. */
  protocol_versions?: number[] | null;
  /** On `connection.error`: whether reconnecting (with backoff) may work. */
  reconnect?: boolean | null;
  /** With 4004: when the same request would pass. */
  retry_after_ms?: number | null;
}
/** A `connection.error` frame. */
export type ConnectionErrorEvent = NovaFrame<'connection.error', ConnectionErrorData>;

/** `error`: A request failed (reply_to = its id); the connection stays unless a connection.error follows. Sent by: server. */
export interface ErrorData {
  /**
   * A code of docs/protocol.md's tables (40xx, or for `connection.error`
   * the close code that follows).
   */
  code: number;
  /**
   * With 4005 for invalid `data`: each field at fault and the rule it
   * broke.
   */
  fields?: {
    /** Where: `data`, `data.stream_id`, `data.items.0.name`. */
    field: string;
    /** What: `required string`, `must be a number`, `at most 140 characters`. */
    rule: string;
  }[] | null;
  /** With 4004: the limit that was hit. */
  limit?: unknown;
  /** What went wrong, for a person. */
  message: string;
  /** With 4010: the protocol versions the server speaks. */
  protocol_versions?: number[] | null;
  /** On `connection.error`: whether reconnecting (with backoff) may work. */
  reconnect?: boolean | null;
  /** With 4004: when the same request would pass. */
  retry_after_ms?: number | null;
}
/** A `error` frame. */
export type ErrorEvent = NovaFrame<'error', ErrorData>;

/** `channel.subscribe`: Join channels, recovering what was missed since a position; each is answered on its own. Sent by: client. */
export interface ChannelSubscribeData {
  /** Channel names (`namespace:id`), at most `max_channels`. */
  channels: string[];
  /**
   * For channels named in `channels`: the last position the client saw,
   * so it gets what it missed first (docs/protocol.md, Recovery).
   */
  recover?: Record<string, {
    /** The epoch it belongs to. */
    epoch: string;
    /** The offset of the last event received. */
    offset: number;
  }> | null;
}
/** A `channel.subscribe` frame. */
export type ChannelSubscribeEvent = NovaFrame<'channel.subscribe', ChannelSubscribeData>;

/** `channel.unsubscribe`: Leave channels. Sent by: client. */
export interface ChannelUnsubscribeData {
  /** Channel names (`namespace:id`), at most `max_channels`. */
  channels: string[];
}
/** A `channel.unsubscribe` frame. */
export type ChannelUnsubscribeEvent = NovaFrame<'channel.unsubscribe', ChannelUnsubscribeData>;

/** `channel.subscribed`: Joined one channel: who is present, the position, what recovery found. Sent by: server. */
export interface ChannelSubscribedData {
  /** Channels with history: the epoch of that offset. */
  epoch?: string | null;
  /** When recovery was asked for: how many missed events follow. */
  missed?: number | null;
  /**
   * Channels with history: the offset the subscription starts at (the
   * last event before it; live events follow it).
   */
  offset?: number | null;
  /** User ids present (at most 1,000 listed). */
  presence: string[];
  /** How many are present. */
  presence_count: number;
  /** When recovery was asked for: whether every missed event follows. */
  recovered?: boolean | null;
  /** On `team:` channels: the status each present user set. */
  statuses?: {
    /** A member's status on a team channel. */
    status: 'online' | 'away' | 'busy' | 'offline';
    text?: string | null;
    user_id: string;
  }[] | null;
}
/** A `channel.subscribed` frame. */
export type ChannelSubscribedEvent = NovaFrame<'channel.subscribed', ChannelSubscribedData>;

/** `channel.unsubscribed`: Left one channel (asked for, or its permission was revoked); nothing of it follows. Sent by: server. */
export interface ChannelUnsubscribedData {
  /** Why, when the server did it: `permission_revoked`. */
  reason?: string | null;
}
/** A `channel.unsubscribed` frame. */
export type ChannelUnsubscribedEvent = NovaFrame<'channel.unsubscribed', ChannelUnsubscribedData>;

/** `channel.presence`: A user's first connection joined the channel, or their last one left. Sent by: server. */
export interface ChannelPresenceData {
  /** Their first connection joined, or their last one left. */
  state: 'joined' | 'left';
  /** Who. */
  user_id: string;
}
/** A `channel.presence` frame. */
export type ChannelPresenceEvent = NovaFrame<'channel.presence', ChannelPresenceData>;

/** `chat.message`: A message: from a client, relayed to the channel with sender_id and message_id set, receipt to the sender; a backend may publish one too (an agent's own message). Sent by: client, server, backend. */
export interface ChatMessageData {
  /** The text. */
  content: string;
  /** Set by the server: the message's id, the `message_id` of the receipt. */
  message_id?: string | null;
  /**
   * Set by the server: the authenticated sender (a client's value is
   * overwritten).
   */
  sender_id?: string | null;
  /** The thread it answers, if any. */
  thread_id?: string | null;
}
/** A `chat.message` frame. */
export type ChatMessageEvent = NovaFrame<'chat.message', ChatMessageData>;

/** `chat.typing`: A typing indicator (a backend's for an agent that is typing), relayed to the channel with sender_id set; no receipt. Sent by: client, server, backend. */
export interface ChatTypingData {
  /** Whether the user is typing (absent: true). */
  is_typing?: boolean | null;
  /** Set by the server. */
  sender_id?: string | null;
}
/** A `chat.typing` frame. */
export type ChatTypingEvent = NovaFrame<'chat.typing', ChatTypingData>;

/** `chat.configure`: Change this conversation's settings (model, temperature, tools) for its agent. Sent by: client. */
export interface ChatConfigureData {
  /** The model to answer with. */
  model?: string | null;
  /** Anything else the agent understands. */
  settings?: Record<string, unknown> | null;
  /** A system prompt for this conversation only. */
  system_prompt?: string | null;
  /** Sampling temperature. */
  temperature?: number | null;
  /** The MCP tools the agent may use here. */
  tools?: string[] | null;
}
/** A `chat.configure` frame. */
export type ChatConfigureEvent = NovaFrame<'chat.configure', ChatConfigureData>;

/** `chat.regenerate`: Ask the agent to answer a message again. Sent by: client. */
export interface ChatRegenerateData {
  /** The assistant message to answer again. */
  message_id: string;
  /** A different model for the new answer. */
  model?: string | null;
}
/** A `chat.regenerate` frame. */
export type ChatRegenerateEvent = NovaFrame<'chat.regenerate', ChatRegenerateData>;

/** `message.received`: Receipt for a chat.message: the id it was delivered with. Sent by: server. */
export interface MessageReceivedData {
  /** The channel it went to. */
  channel?: string | null;
  /** The id the message got (its `id` and `data.message_id` as delivered). */
  message_id: string;
}
/** A `message.received` frame. */
export type MessageReceivedEvent = NovaFrame<'message.received', MessageReceivedData>;

/** `conversation.updated`: A conversation's metadata changed (title, settings). Sent by: backend. */
export interface ConversationUpdatedData {
  /** The conversation. */
  conversation_id: string;
  /** Other metadata that changed. */
  metadata?: Record<string, unknown> | null;
  /** Its title, when it changed. */
  title?: string | null;
  /** When, RFC 3339. */
  updated_at?: string | null;
}
/** A `conversation.updated` frame. */
export type ConversationUpdatedEvent = NovaFrame<'conversation.updated', ConversationUpdatedData>;

/** `assistant.start`: An answer begins streaming. Sent by: backend. */
export interface AssistantStartData {
  /** The user message it answers. */
  in_reply_to?: string | null;
  /** The id the finished message will have. */
  message_id?: string | null;
  /** The model answering. */
  model?: string | null;
  /** The answer's id: every later `assistant.*` of it carries it. */
  stream_id: string;
  /** The prompt template used. */
  template_id?: string | null;
}
/** A `assistant.start` frame. */
export type AssistantStartEvent = NovaFrame<'assistant.start', AssistantStartData>;

/** `assistant.token`: The next chunk of a streaming answer. Sent by: backend. */
export interface AssistantTokenData {
  /** The next piece of text. */
  chunk: string;
  /** Its position in the answer (0, 1, 2, …), so a client can spot a gap. */
  index?: number | null;
  /** True on the last chunk. */
  is_final?: boolean | null;
  /** The answer this belongs to. */
  stream_id: string;
  /** The prompt template used. */
  template_id?: string | null;
}
/** A `assistant.token` frame. */
export type AssistantTokenEvent = NovaFrame<'assistant.token', AssistantTokenData>;

/** `assistant.complete`: An answer finished: its full text and why it stopped. Sent by: backend. */
export interface AssistantCompleteData {
  /** The whole text, so a client that missed tokens has it. */
  content?: string | null;
  /** `stop`, `length`, `tool_calls`, `cancelled`. */
  finish_reason?: string | null;
  /** The stored message's id. */
  message_id?: string | null;
  /** The answer. */
  stream_id: string;
  /** Tokens used. */
  usage?: {
    completion_tokens: number;
    prompt_tokens: number;
  } | null;
}
/** A `assistant.complete` frame. */
export type AssistantCompleteEvent = NovaFrame<'assistant.complete', AssistantCompleteData>;

/** `assistant.snapshot`: An answer so far, for a client that joined or returned mid-answer; its later tokens follow. Sent by: server. */
export interface AssistantSnapshotData {
  /**
   * Whether the answer has ended (nothing of it follows but
   * `assistant.complete` or `assistant.error`, if not received yet).
   */
  is_final: boolean;
  /**
   * The offset of the last token in `text`: the answer's tokens after
   * it follow as `assistant.token` events.
   */
  offset: number;
  /** The answer. */
  stream_id: string;
  /** Its chunks so far, in order. */
  text: string;
}
/** A `assistant.snapshot` frame. */
export type AssistantSnapshotEvent = NovaFrame<'assistant.snapshot', AssistantSnapshotData>;

/** `assistant.error`: An answer failed. Sent by: backend. */
export interface AssistantErrorData {
  /** A machine-readable reason. */
  code?: string | null;
  /** Why, for a person. */
  message: string;
  /** Whether asking again may work. */
  retryable?: boolean | null;
  /** The answer that failed. */
  stream_id: string;
}
/** A `assistant.error` frame. */
export type AssistantErrorEvent = NovaFrame<'assistant.error', AssistantErrorData>;

/** `tool.call.start`: A tool call begins. Sent by: backend. */
export interface ToolCallStartData {
  /**
   * The agent that made the call (`configs/agents.yaml`): a
   * `tool.call.response` with this `call_id` is routed to it.
   */
  agent?: string | null;
  /** Its arguments. */
  arguments?: unknown;
  /** The call's id: every later `tool.call.*` of it carries it. */
  call_id: string;
  /** Whether the tool waits for a `tool.call.response` from the user. */
  interactive?: boolean | null;
  /** The answer that made the call. */
  stream_id?: string | null;
  /** The tool. */
  tool: string;
}
/** A `tool.call.start` frame. */
export type ToolCallStartEvent = NovaFrame<'tool.call.start', ToolCallStartData>;

/** `tool.call.progress`: How far a tool call is (0–1). Sent by: backend. */
export interface ToolCallProgressData {
  /** The call. */
  call_id: string;
  /** What it is doing, for a person. */
  message?: string | null;
  /** How far, from 0 to 1. */
  progress: number;
}
/** A `tool.call.progress` frame. */
export type ToolCallProgressEvent = NovaFrame<'tool.call.progress', ToolCallProgressData>;

/** `tool.call.complete`: A tool call returned. Sent by: backend. */
export interface ToolCallCompleteData {
  /** The call. */
  call_id: string;
  /** How long it took. */
  duration_ms?: number | null;
  /** What the tool returned. */
  result?: unknown;
}
/** A `tool.call.complete` frame. */
export type ToolCallCompleteEvent = NovaFrame<'tool.call.complete', ToolCallCompleteData>;

/** `tool.call.error`: A tool call failed. Sent by: backend. */
export interface ToolCallErrorData {
  /** The call. */
  call_id: string;
  /** A machine-readable reason. */
  code?: string | null;
  /** Why it failed, for a person. */
  message: string;
  /** Whether calling again may work. */
  retryable?: boolean | null;
}
/** A `tool.call.error` frame. */
export type ToolCallErrorEvent = NovaFrame<'tool.call.error', ToolCallErrorData>;

/** `tool.call.response`: The user's answer to an interactive tool call. Sent by: client. */
export interface ToolCallResponseData {
  /** The interactive call being answered. */
  call_id: string;
  /** The user's answer. */
  response: unknown;
}
/** A `tool.call.response` frame. */
export type ToolCallResponseEvent = NovaFrame<'tool.call.response', ToolCallResponseData>;

/** `file.upload.request`: Ask to upload a file. Sent by: client. */
export interface FileUploadRequestData {
  /** `sha256:<hex>` of the content, checked when the upload completes. */
  checksum?: string | null;
  /** Its media type. */
  content_type: string;
  /** The file's name, without a path. */
  filename: string;
  /** Its size in bytes. */
  size: number;
}
/** A `file.upload.request` frame. */
export type FileUploadRequestEvent = NovaFrame<'file.upload.request', FileUploadRequestData>;

/** `file.upload.authorized`: How and where to send an upload's content. Sent by: backend. */
export interface FileUploadAuthorizedData {
  /** For `chunked`: the size of each `file.chunk`. */
  chunk_size?: number | null;
  /** When the authorization lapses, RFC 3339. */
  expires_at?: string | null;
  /** Headers the request must carry. */
  headers?: Record<string, string> | null;
  /** How to send the content. */
  method: 'PUT' | 'POST' | 'chunked';
  /** The upload: every later `file.*` of it carries it. */
  upload_id: string;
  /** Where to `PUT`/`POST` it (not for `chunked`). */
  url?: string | null;
}
/** A `file.upload.authorized` frame. */
export type FileUploadAuthorizedEvent = NovaFrame<'file.upload.authorized', FileUploadAuthorizedData>;

/** `file.chunk`: One chunk of a chunked upload. Sent by: client. */
export interface FileChunkData {
  /** The bytes, base64. */
  data: string;
  /** The chunk's position (0, 1, 2, …). */
  index: number;
  /** True on the last chunk. */
  last?: boolean | null;
  /** The upload. */
  upload_id: string;
}
/** A `file.chunk` frame. */
export type FileChunkEvent = NovaFrame<'file.chunk', FileChunkData>;

/** `file.upload.progress`: How much of an upload has been stored. Sent by: backend. */
export interface FileUploadProgressData {
  /** Bytes stored so far. */
  bytes_received: number;
  /** The file's size. */
  total_bytes: number;
  /** The upload. */
  upload_id: string;
}
/** A `file.upload.progress` frame. */
export type FileUploadProgressEvent = NovaFrame<'file.upload.progress', FileUploadProgressData>;

/** `file.upload.complete`: An upload is stored. Sent by: backend. */
export interface FileUploadCompleteData {
  /** `sha256:<hex>` of what was stored. */
  checksum?: string | null;
  /** The stored file's id, for messages that refer to it. */
  file_id: string;
  /** Its size in bytes. */
  size?: number | null;
  /** The upload. */
  upload_id: string;
  /** Where to fetch it. */
  url?: string | null;
}
/** A `file.upload.complete` frame. */
export type FileUploadCompleteEvent = NovaFrame<'file.upload.complete', FileUploadCompleteData>;

/** `team.presence.update`: A member's status on a team channel: a client sets its own, the server tells the channel (user_id set). Sent by: client, server. */
export interface TeamPresenceUpdateData {
  /** The status. */
  status: 'online' | 'away' | 'busy' | 'offline';
  /** A short note ("in a meeting"). */
  text?: string | null;
  /** Set by the server: whose status it is. */
  user_id?: string | null;
}
/** A `team.presence.update` frame. */
export type TeamPresenceUpdateEvent = NovaFrame<'team.presence.update', TeamPresenceUpdateData>;

/** `team.activity`: An entry of the team's activity feed. Sent by: backend. */
export interface TeamActivityData {
  /** What, as a verb: `created_task`, `commented`, `completed`. */
  action: string;
  /** Who did it (a user or an agent). */
  actor_id: string;
  /** When, RFC 3339. */
  at?: string | null;
  /** One line for the feed. */
  summary?: string | null;
  /** What it was done to. */
  target?: unknown;
}
/** A `team.activity` frame. */
export type TeamActivityEvent = NovaFrame<'team.activity', TeamActivityData>;

/** `team.notification`: A notification for the team. Sent by: backend. */
export interface TeamNotificationData {
  /** More text. */
  body?: string | null;
  /** How loud. */
  level?: 'info' | 'success' | 'warning' | 'error' | null;
  /** Where it leads in the app. */
  link?: string | null;
  /** Its id, to mark it read. */
  notification_id?: string | null;
  /** The headline. */
  title: string;
}
/** A `team.notification` frame. */
export type TeamNotificationEvent = NovaFrame<'team.notification', TeamNotificationData>;

/** `agent.invoke`: Run an agent directly (channel agent:{name}). Sent by: client. */
export interface AgentInvokeData {
  /** What the agent is asked to do. */
  input: unknown;
  /** The client's id for the run, echoed in `agent.status`. */
  invocation_id?: string | null;
  /** Options the agent understands. */
  options?: Record<string, unknown> | null;
}
/** A `agent.invoke` frame. */
export type AgentInvokeEvent = NovaFrame<'agent.invoke', AgentInvokeData>;

/** `agent.status`: Where an agent run is. Sent by: backend. */
export interface AgentStatusData {
  /** The run. */
  invocation_id: string;
  /** What it is doing, for a person. */
  message?: string | null;
  /** How far, from 0 to 1, when known. */
  progress?: number | null;
  /** Where it is. */
  state: 'queued' | 'running' | 'waiting' | 'completed' | 'failed' | 'cancelled';
}
/** A `agent.status` frame. */
export type AgentStatusEvent = NovaFrame<'agent.status', AgentStatusData>;

/** `agent.output`: An intermediate output of a run. Sent by: backend. */
export interface AgentOutputData {
  /** The run. */
  invocation_id: string;
  /** An intermediate result. */
  output: unknown;
  /** Its position (0, 1, 2, …). */
  sequence?: number | null;
}
/** A `agent.output` frame. */
export type AgentOutputEvent = NovaFrame<'agent.output', AgentOutputData>;

/** `agent.complete`: A run finished. Sent by: backend. */
export interface AgentCompleteData {
  /** How long it ran. */
  duration_ms?: number | null;
  /** Why it failed. */
  error?: string | null;
  /** The run. */
  invocation_id: string;
  /** Its final result (absent when it failed). */
  result?: unknown;
}
/** A `agent.complete` frame. */
export type AgentCompleteEvent = NovaFrame<'agent.complete', AgentCompleteData>;

/** `config_validated`: mcp_servers.yaml or agents.yaml was reloaded: valid with its changes, or invalid with its errors (the last good one stays). Sent by: server. */
export interface ConfigValidatedData {
  /** `agents.yaml`: agents in the config in force. */
  agents?: number | null;
  /** When valid: what changed. */
  changes?: {
    /** How it changed. */
    change: 'added' | 'removed' | 'modified';
    fields: string[];
    /** The server's name; in `agents.yaml`, the agent's. */
    server: string;
  }[] | null;
  /** When invalid: what is wrong. */
  errors?: {
    field?: string | null;
    line?: number | null;
    message: string;
    server?: string | null;
  }[] | null;
  /** The file (`mcp_servers.yaml` or `agents.yaml`). */
  file: string;
  /** `mcp_servers.yaml`: servers in the config in force. */
  servers?: number | null;
  /** Whether it is in force. */
  valid: boolean;
}
/** A `config_validated` frame. */
export type ConfigValidatedEvent = NovaFrame<'config_validated', ConfigValidatedData>;

/** `mcp_toggled`: An MCP server was enabled or disabled. Sent by: server. */
export interface McpToggledData {
  /** Its new `enabled`. */
  enabled: boolean;
  /** The server. */
  name: string;
}
/** A `mcp_toggled` frame. */
export type McpToggledEvent = NovaFrame<'mcp_toggled', McpToggledData>;

/** `agent_toggled`: An agent of agents.yaml was enabled or disabled. Sent by: server. */
export interface AgentToggledData {
  /** Its new `enabled`. */
  enabled: boolean;
  /** The server. */
  name: string;
}
/** A `agent_toggled` frame. */
export type AgentToggledEvent = NovaFrame<'agent_toggled', AgentToggledData>;

/** `agent_availability`: An agent became available or unavailable to the gateway (each node tells its own clients). Sent by: server. */
export interface AgentAvailabilityData {
  /** When this node saw the change, RFC 3339. */
  checked_at?: string | null;
  /** The agent (`configs/agents.yaml`). */
  name: string;
  /** What it was before. */
  previous: 'available' | 'unavailable' | 'unknown';
  /** Why, for a person: what showed it alive, or what is missing. */
  reason: string;
  /** Whether requests for it are accepted now. */
  status: 'available' | 'unavailable';
}
/** A `agent_availability` frame. */
export type AgentAvailabilityEvent = NovaFrame<'agent_availability', AgentAvailabilityData>;

/** `prompt_updated`: The system prompt changed. Sent by: server. */
export interface PromptUpdatedData {
  /** The text's size. */
  bytes: number;
  /** The text, unless over the inline limit. */
  content?: string | null;
  /** The prompt file. */
  file: string;
  /** `sha256:<hex>` of the text. */
  hash: string;
  /** When truncated: the beginning. */
  preview?: string | null;
  /** Whether `content` was left out for size. */
  truncated: boolean;
  /** +1 per change since the server started. */
  version: number;
}
/** A `prompt_updated` frame. */
export type PromptUpdatedEvent = NovaFrame<'prompt_updated', PromptUpdatedData>;

/** `system_health`: A server's or service's health changed. Sent by: server, backend. */
export interface SystemHealthData {
  /** When it was checked, RFC 3339. */
  checked_at?: string | null;
  /** Why it is down. */
  error?: string | null;
  /** How long the check took. */
  latency_ms?: number | null;
  /** The MCP server or service. */
  name: string;
  /** Its status before. */
  previous?: 'up' | 'down' | 'unknown' | null;
  /** Its status now. */
  status: 'up' | 'down' | 'unknown';
}
/** A `system_health` frame. */
export type SystemHealthEvent = NovaFrame<'system_health', SystemHealthData>;

/** `task_updated`: A task on the task board changed. Sent by: backend. */
export interface TaskUpdatedData {
  /** Who it is assigned to. */
  assignee?: string | null;
  /** Its status now (`todo`, `in_progress`, `done`, …; the task board's). */
  status: string;
  /** The task. */
  task_id: string;
  /** Its title, when it changed. */
  title?: string | null;
}
/** A `task_updated` frame. */
export type TaskUpdatedEvent = NovaFrame<'task_updated', TaskUpdatedData>;

/** `chat_message`: Seed 000: a stored chat message. Sent by: backend. */
export interface LegacyChatMessageData {
  content: string;
  sender_id: string;
  thread_id: string;
}
/** A `chat_message` frame. */
export type LegacyChatMessageEvent = NovaFrame<'chat_message', LegacyChatMessageData>;

/** `task_update`: Seed 000: a task changed (task_updated is the current name). Sent by: backend. */
export interface TaskUpdateData {
  /** Its status now. */
  status?: string | null;
  /** The task. */
  task_id: string;
}
/** A `task_update` frame. */
export type TaskUpdateEvent = NovaFrame<'task_update', TaskUpdateData>;

/** `agent_status`: Seed 000: an agent's status for the navigation. Sent by: backend. */
export interface LegacyAgentStatusData {
  /** The agent. */
  agent_id: string;
  /** Its status, as the navigation shows it. */
  status: string;
}
/** A `agent_status` frame. */
export type LegacyAgentStatusEvent = NovaFrame<'agent_status', LegacyAgentStatusData>;

/** `graph_update`: Seed 000: knowledge-graph nodes and edges changed. Sent by: backend. */
export interface GraphUpdateData {
  /** Edges added or changed. */
  edges?: unknown[] | null;
  /** Nodes added or changed. */
  nodes?: unknown[] | null;
}
/** A `graph_update` frame. */
export type GraphUpdateEvent = NovaFrame<'graph_update', GraphUpdateData>;

/** `llm_stream`: Seed 000: a chunk of an LLM answer (assistant.token is the current name). Sent by: backend. */
export interface LlmStreamData {
  chunk: string;
  is_final: boolean;
  stream_id: string;
  template_id: string;
}
/** A `llm_stream` frame. */
export type LlmStreamEvent = NovaFrame<'llm_stream', LlmStreamData>;

/** Every event type of the catalog, with its frame. */
export interface EventMap {
  'connection.init': ConnectionInitEvent;
  'connection.ack': ConnectionAckEvent;
  'connection.heartbeat': ConnectionHeartbeatEvent;
  'connection.reconnect': ConnectionReconnectEvent;
  'connection.refresh': ConnectionRefreshEvent;
  'connection.refreshed': ConnectionRefreshedEvent;
  'connection.expiring': ConnectionExpiringEvent;
  'connection.error': ConnectionErrorEvent;
  'error': ErrorEvent;
  'channel.subscribe': ChannelSubscribeEvent;
  'channel.unsubscribe': ChannelUnsubscribeEvent;
  'channel.subscribed': ChannelSubscribedEvent;
  'channel.unsubscribed': ChannelUnsubscribedEvent;
  'channel.presence': ChannelPresenceEvent;
  'chat.message': ChatMessageEvent;
  'chat.typing': ChatTypingEvent;
  'chat.configure': ChatConfigureEvent;
  'chat.regenerate': ChatRegenerateEvent;
  'message.received': MessageReceivedEvent;
  'conversation.updated': ConversationUpdatedEvent;
  'assistant.start': AssistantStartEvent;
  'assistant.token': AssistantTokenEvent;
  'assistant.complete': AssistantCompleteEvent;
  'assistant.snapshot': AssistantSnapshotEvent;
  'assistant.error': AssistantErrorEvent;
  'tool.call.start': ToolCallStartEvent;
  'tool.call.progress': ToolCallProgressEvent;
  'tool.call.complete': ToolCallCompleteEvent;
  'tool.call.error': ToolCallErrorEvent;
  'tool.call.response': ToolCallResponseEvent;
  'file.upload.request': FileUploadRequestEvent;
  'file.upload.authorized': FileUploadAuthorizedEvent;
  'file.chunk': FileChunkEvent;
  'file.upload.progress': FileUploadProgressEvent;
  'file.upload.complete': FileUploadCompleteEvent;
  'team.presence.update': TeamPresenceUpdateEvent;
  'team.activity': TeamActivityEvent;
  'team.notification': TeamNotificationEvent;
  'agent.invoke': AgentInvokeEvent;
  'agent.status': AgentStatusEvent;
  'agent.output': AgentOutputEvent;
  'agent.complete': AgentCompleteEvent;
  'config_validated': ConfigValidatedEvent;
  'mcp_toggled': McpToggledEvent;
  'agent_toggled': AgentToggledEvent;
  'agent_availability': AgentAvailabilityEvent;
  'prompt_updated': PromptUpdatedEvent;
  'system_health': SystemHealthEvent;
  'task_updated': TaskUpdatedEvent;
  'chat_message': LegacyChatMessageEvent;
  'task_update': TaskUpdateEvent;
  'agent_status': LegacyAgentStatusEvent;
  'graph_update': GraphUpdateEvent;
  'llm_stream': LlmStreamEvent;
}

/** What a client may send, with its `data`. */
export interface RequestMap {
  'connection.init': ConnectionInitData;
  'connection.heartbeat': ConnectionHeartbeatData;
  'connection.reconnect': ConnectionReconnectData;
  'connection.refresh': ConnectionRefreshData;
  'channel.subscribe': ChannelSubscribeData;
  'channel.unsubscribe': ChannelUnsubscribeData;
  'chat.message': ChatMessageData;
  'chat.typing': ChatTypingData;
  'chat.configure': ChatConfigureData;
  'chat.regenerate': ChatRegenerateData;
  'tool.call.response': ToolCallResponseData;
  'file.upload.request': FileUploadRequestData;
  'file.chunk': FileChunkData;
  'team.presence.update': TeamPresenceUpdateData;
  'agent.invoke': AgentInvokeData;
}
// </catalog>

/** Any server frame, typed by its `type` when it is in the catalog. */
export type NovaEvent = EventMap[keyof EventMap] | NovaFrame;

/** How the client authenticates: one of `token`, `getToken` or `apiKey`. */
export interface NovaClientOptions {
  /** `ws://host:port/ws` (or `/ws/{client_id}`). Default in a web page: the page's host, `/ws`. */
  url?: string;
  /** A JWT. It cannot be renewed: the connection ends when it expires (close 4002). */
  token?: string;
  /** Returns a fresh JWT: called on every connect and on `connection.expiring` (then sent as `connection.refresh`). */
  getToken?: () => string | Promise<string>;
  /** A static API key. */
  apiKey?: string;
  /** With the development API key: the user to act as. */
  userId?: string;
  /** Used for the default `url` only: `/ws/{clientId}`. */
  clientId?: string;
  /** The WebSocket constructor. Default: `globalThis.WebSocket` (browsers, Node 22+, Node 20 with --experimental-websocket). */
  WebSocket?: new (url: string) => WebSocket;
  /**
   * How long a request waits for its reply, a connection for its
   * `connection.ack`, `getToken` for a token, and a subscribe for its
   * answer before it is sent again, ms. Default 10000.
   */
  requestTimeoutMs?: number;
  /** How long a connection must hold before `reconnectAttempts` counts from 0 again, ms. Default 10000. */
  stableAfterMs?: number;
  /** Entries kept in `state.history`. Default 50. */
  historyLimit?: number;
}

/** Where the connection is. */
export type NovaStatus = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed';

/** One change of status, in `state.history`. */
export interface NovaStatusEntry {
  status: NovaStatus;
  /** When, ISO 8601. */
  at: string;
  /** The close code (or the failed request's code) that caused it. */
  code?: number | string | null;
  /** Why, in words. */
  reason?: string;
  /** For `reconnecting`: the delay before the next attempt, ms. */
  delayMs?: number;
}

/** The connection's state, as `client.state` holds it. */
export interface NovaState {
  status: NovaStatus;
  /** Authenticated (`connection.ack` received) and open. */
  connected: boolean;
  /** A socket is opening or authenticating. */
  connecting: boolean;
  /** Reconnect attempts since the last connection that held `stableAfterMs`. */
  reconnectAttempts: number;
  /** When the last reconnect attempt started, ISO 8601. */
  lastReconnect: string | null;
  /** The last problem, in words (a `connection.error` message, a close, a failed refresh). */
  lastError: string | null;
  /** Its code: a close code, an error code, or null. */
  lastErrorCode: number | string | null;
  /** While reconnecting: the delay chosen before the next attempt, ms. */
  retryDelayMs: number | null;
  /** The last status changes, oldest first (at most `historyLimit`). */
  history: NovaStatusEntry[];
  /** `connection.ack`'s `connection_id`. */
  connectionId: string | null;
  /** The authenticated user. */
  userId: string | null;
  /** When the JWT expires (RFC 3339); null for an API key. */
  expiresAt: string | null;
}

/** A value with subscribers: the Svelte store contract. */
export interface Readable<T> {
  /** The current value. */
  get(): T;
  /** Calls `fn` with the value now and on every change; returns the unsubscriber. */
  subscribe(fn: (value: T) => void): () => void;
}

/** One streamed answer, assembled: `assistant.snapshot` merged with `assistant.token`. */
export interface NovaAnswer {
  stream_id: string;
  channel: string | null;
  /** The text so far. */
  text: string;
  /** Whether it has ended (a final token, `assistant.complete` or `assistant.error`); an `assistant.start` under the same `stream_id` starts it again from nothing. */
  done: boolean;
  /** The offset of its last token, in channels with history. */
  offset: number | null;
  /** `assistant.error`'s message, when it failed. */
  error?: string;
}

/**
 * What a reconnect (or `connect()` after `close()`, or an epoch change while
 * subscribed) did to a channel. `recovered: false` means events may have
 * been missed: reload the channel's state from the application.
 */
export interface NovaRecovery {
  channel: string;
  /** Every missed event follows (true), or some may be lost (false). */
  recovered: boolean;
  /** How many missed events follow. */
  missed: number;
  epoch: string | null;
  offset: number | null;
  /**
   * Why not recovered: `no_history` (the channel keeps none), `gone` (the
   * events are gone or the epoch changed), `history_lost` (the server's
   * history moved while subscribed), `no_position`, `refused` (the server
   * refused to take the channel back, e.g. the new token no longer grants
   * it: the client has dropped it); null when recovered.
   */
  reason: 'no_history' | 'gone' | 'history_lost' | 'no_position' | 'refused' | null;
  /** With `refused`: the server's error code (4003 not allowed, 4006 bad name). */
  code?: number;
}

/** The client's own events, beside the server's frames. */
export interface ClientEventMap {
  answer: NovaAnswer;
  recovery: NovaRecovery;
  '*': NovaEvent;
}

/** Options of one request. */
export interface SendOptions {
  /** The channel, for channel requests (`chat.*`, `team.presence.update`, requests for an agent). */
  channel?: string;
  /** Overrides `requestTimeoutMs`. */
  timeoutMs?: number;
  /** The request's id: reuse one to resend a request for an agent idempotently (requests waiting with one id all settle with its reply). */
  id?: string;
  /** Wait for a reply even for `chat.typing` / `team.presence.update`. */
  expectReply?: boolean;
}

/** A failed request or connection. */
export declare class NovaError extends Error {
  /** The server's code (4003, 4005, ...), or 'timeout', 'disconnected', 'closed', 'unsubscribed'. */
  code: number | string;
  /** The server's `error` frame, when there is one. */
  frame: ErrorEvent | null;
  /** Its data. */
  data: ErrorData | null;
}

/** A connection to nova-realtime that stays up until `close()`. */
export declare class NovaClient {
  constructor(options: NovaClientOptions);
  /** The WebSocket URL. */
  readonly url: string;
  /** The connection's state, observable. */
  readonly state: Readable<NovaState>;
  /** Starts connecting; reconnects by itself until `close()`. */
  connect(): this;
  /** Stops for good: no reconnect; pending requests reject with code 'closed'. */
  close(): void;
  /** Drops the connection and reconnects at once; subscriptions are recovered. */
  reconnect(): void;
  /** Resolves with `connection.ack`'s data once connected; rejects when the client stops (at once when it is closed). */
  ready(timeoutMs?: number): Promise<ConnectionAckData>;
  /**
   * Subscribes (kept across reconnects); resolves with `channel.subscribed`'s
   * data. Rejects with the server's error, or with 'unsubscribed' / 'closed'
   * when `unsubscribe()` / `close()` ends the wait (never reported as an
   * unhandled rejection when the promise is not awaited).
   */
  subscribe(channel: string): Promise<ChannelSubscribedData>;
  /**
   * Leaves a channel; resolves with `channel.unsubscribed`'s data once the
   * server confirms, or with `{}` at once when the server was not asked for
   * the channel on the current connection (no connection, say).
   */
  unsubscribe(channel: string): Promise<ChannelUnsubscribedData>;
  /** Sends a request of the catalog; resolves with its reply's data (`message.received`'s for a chat message). */
  send<K extends keyof RequestMap>(
    type: K,
    data: RequestMap[K] & Record<string, unknown>,
    options?: SendOptions,
  ): Promise<MessageReceivedData | Record<string, unknown> | null>;
  /** Sends a request of a type outside the catalog (the server refuses it with 4005 unless it knows it). */
  send<T extends string>(
    type: T & (T extends keyof EventMap ? never : unknown),
    data?: Record<string, unknown>,
    options?: SendOptions,
  ): Promise<Record<string, unknown> | null>;
  /** Calls `handler` with every server frame of `type`; returns the function that removes it. */
  on<K extends keyof EventMap>(type: K, handler: (event: EventMap[K]) => void): () => void;
  on<K extends keyof ClientEventMap>(type: K, handler: (event: ClientEventMap[K]) => void): () => void;
  /** Calls `handler` with every frame of a type outside the catalog. */
  on<T extends string>(
    type: T & (T extends keyof EventMap | keyof ClientEventMap ? never : unknown),
    handler: (event: NovaFrame<T>) => void,
  ): () => void;
}

/** The delay before reconnect attempt `attempt` (0 first): random in the upper half of min(1000 * 2^attempt, 30000) ms. */
export declare function backoffDelay(attempt: number, random?: () => number): number;

/** What to do after a close with `code`: retry with backoff (after 4004 not before a minute), refresh the credentials (with getToken) then retry, or stop. */
export declare function closeAction(code: number, options?: { refreshable?: boolean }): 'retry' | 'refresh' | 'stop';
