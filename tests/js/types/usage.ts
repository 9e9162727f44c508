// How an application uses the client's types (clients/js/nova-realtime.d.ts):
// `tsc --noEmit` must accept every line, and reject each line marked
// `@ts-expect-error` (an unused marker is an error too), so the types stay
// as strict as the catalog says. Checked by tests/js/types.test.mjs.

import {
  NovaClient,
  NovaError,
  backoffDelay,
  closeAction,
  PROTOCOL_VERSION,
  type EventMap,
  type RequestMap,
  type NovaAnswer,
  type NovaRecovery,
  type NovaState,
  type AssistantTokenEvent,
  type ChannelSubscribedData,
  type LegacyChatMessageData,
} from '../../../clients/js/nova-realtime.js';

const client = new NovaClient({ url: 'ws://localhost:8000/ws', getToken: async () => 'a.jwt.token' });
new NovaClient({ apiKey: 'development', userId: 'alice', requestTimeoutMs: 5000 });
// @ts-expect-error: a token is a string
new NovaClient({ token: 42 });

client.connect();
const version: 1 = PROTOCOL_VERSION;

// Server events, typed by their type.
const off = client.on('assistant.token', (event) => {
  const chunk: string = event.data.chunk;
  const last: boolean | null | undefined = event.data.is_final;
  const offset: number | undefined = event.offset;
  // @ts-expect-error: a token has no `content`
  event.data.content;
  void [chunk, last, offset];
});
off();
client.on('channel.presence', (event) => {
  const state: 'joined' | 'left' = event.data.state;
  // @ts-expect-error: no such state
  const wrong: 'joined' = event.data.state;
  void [state, wrong];
});
client.on('agent.status', (event) => {
  // @ts-expect-error: the states are a closed list
  if (event.data.state === 'dancing') return;
});
client.on('error', (event) => {
  const code: number = event.data.code;
  void code;
});
client.on('answer', (answer: NovaAnswer) => {
  const text: string = answer.text;
  void text;
});
client.on('recovery', (recovery: NovaRecovery) => {
  if (!recovery.recovered) console.log(`reload ${recovery.channel}: ${recovery.reason}`);
});
client.on('*', (event) => console.log(event.type));
// A type outside the catalog: the frame with loose data.
client.on('my_app.thing', (event) => {
  const data: Record<string, unknown> = event.data;
  void data;
});

// The state store.
const stop = client.state.subscribe((state: NovaState) => {
  const status: 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed' = state.status;
  const attempts: number = state.reconnectAttempts;
  void [status, attempts];
});
stop();

async function requests(): Promise<void> {
  const subscribed: ChannelSubscribedData = await client.subscribe('conversation:c1');
  const present: number = subscribed.presence_count;
  await client.send('chat.message', { content: 'hi', attachments: ['extra fields pass'] }, { channel: 'conversation:c1' });
  // @ts-expect-error: content is a string
  await client.send('chat.message', { content: 1 }, { channel: 'conversation:c1' });
  // @ts-expect-error: content is required
  await client.send('chat.message', {}, { channel: 'conversation:c1' });
  // @ts-expect-error: clients do not send tokens
  await client.send('assistant.token', { stream_id: 's', chunk: 'x' });
  await client.send('agent.invoke', { input: { task: 'summarise' } }, { channel: 'agent:researcher', id: 'inv-1' });
  await client.send('my_app.request', { anything: true });
  try {
    await client.unsubscribe('conversation:c1');
  } catch (error) {
    if (error instanceof NovaError) {
      const code: number | string = error.code;
      void code;
    }
  }
  void present;
}
void requests;

// The maps.
type Snapshot = EventMap['assistant.snapshot'];
const snapshotText: Snapshot['data']['text'] = 'so far';
const token: AssistantTokenEvent['type'] = 'assistant.token';
const typing: RequestMap['chat.typing'] = { is_typing: true };
const legacy: LegacyChatMessageData = { content: 'x', thread_id: 't', sender_id: 'u' };
const delay: number = backoffDelay(2);
const action: 'retry' | 'refresh' | 'stop' = closeAction(1012);
void [version, snapshotText, token, typing, legacy, delay, action];
