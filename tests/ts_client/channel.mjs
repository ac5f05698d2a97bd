#!/usr/bin/env node
// Wake over MCP: the official TypeScript SDK receives CommHub's notifications/claude/channel on the GET /mcp
// stream that its StreamableHTTPClientTransport opens by itself after initialize, and resumes it with
// Last-Event-ID after the stream drops.
//
// Usage: node channel.mjs <base-url> <token-receiver> <token-sender>  (aliases ts-rx / ts-tx)
//
// 1. The receiver connects (initialize; the SDK opens GET /mcp) and claims its alias; the sender sends a task.
//    The receiver's client.fallbackNotificationHandler gets the channel notification for it.
// 2. The receiver's GET stream is cut (its fetch aborted, as a network drop would); while it is down the sender
//    sends three more tasks; the SDK reconnects with Last-Event-ID and the three arrive once, in order.
// On success one JSON line goes to stdout (exit 0); any failure prints to stderr (exit 1).

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const CHANNEL = 'notifications/claude/channel';
const WAIT_MS = 15000;

class Failure extends Error {}

function check(condition, message, detail) {
  if (!condition) throw new Failure(detail === undefined ? message : `${message}: ${JSON.stringify(detail)}`);
}

function endpoint(base) {
  const url = new URL(base);
  if (!url.pathname.replace(/\/+$/, '').endsWith('/mcp')) url.pathname = url.pathname.replace(/\/+$/, '') + '/mcp';
  return url;
}

async function waitFor(condition, what) {
  const deadline = Date.now() + WAIT_MS;
  while (!condition()) {
    if (Date.now() > deadline) throw new Failure(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function connect(url, token, name, options = {}) {
  const transport = new StreamableHTTPClientTransport(url, {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
    ...options,
  });
  const client = new Client({ name, version: '1.0.0' });
  await client.connect(transport);
  return { name, client, transport };
}

async function ok(agent, tool, args = {}) {
  const result = await agent.client.callTool({ name: tool, arguments: args });
  check(!result.isError, `${agent.name}: ${tool} failed`, result);
  return result.structuredContent;
}

async function main() {
  const [base, tokenRx, tokenTx] = process.argv.slice(2);
  if (!base || !tokenRx || !tokenTx) throw new Failure('usage: node channel.mjs <base-url> <token-rx> <token-tx>');
  const url = endpoint(base);

  // The receiver's fetch: GET requests (the push stream) can be cut from here, like a dropped connection.
  const getStreams = [];
  const getRequests = [];
  const cuttableFetch = (input, init = {}) => {
    if ((init.method ?? 'GET') !== 'GET') return fetch(input, init);
    const cut = new AbortController();
    getStreams.push(cut);
    getRequests.push({ lastEventId: new Headers(init.headers).get('last-event-id') });
    const signal = init.signal ? AbortSignal.any([init.signal, cut.signal]) : cut.signal;
    return fetch(input, { ...init, signal });
  };

  const rx = await connect(url, tokenRx, 'ts-channel-rx', { fetch: cuttableFetch });
  const tx = await connect(url, tokenTx, 'ts-channel-tx');
  const agents = [rx, tx];
  try {
    const caps = rx.client.getServerCapabilities();
    check(caps?.experimental?.['claude/channel'] !== undefined, 'no experimental claude/channel capability', caps);
    check(/get_inbox/.test(rx.client.getInstructions() ?? ''), 'instructions do not explain the events');

    const received = [];
    const otherNotifications = [];
    rx.client.fallbackNotificationHandler = async (notification) => {
      if (notification.method === CHANNEL) received.push(notification.params);
      else otherNotifications.push(notification.method);
    };

    await ok(rx, 'report_status', { alias: 'ts-rx', status: 'idle' });
    await ok(tx, 'report_status', { alias: 'ts-tx', status: 'idle' });
    await waitFor(() => getStreams.length >= 1, 'the SDK to open GET /mcp');

    const first = await ok(tx, 'send_task', { to: 'ts-rx', content: 'first task', title: 'wake up', priority: 'high' });
    await waitFor(() => received.length >= 1, 'the channel notification of the first task');
    const note = received[0];
    check(note.meta.event === 'new_task' && note.meta.task_id === first.task_id, 'first notification', note);
    check(note.meta.from === 'ts-tx' && note.meta.priority === 'high', 'first notification meta', note);
    check(note.content.includes(first.task_id) && note.content.includes('get_inbox'), 'content', note);
    for (const [key, value] of Object.entries(note.meta)) {
      check(/^[A-Za-z_][A-Za-z0-9_]*$/.test(key) && typeof value === 'string', 'meta key/value', [key, value]);
    }

    // Drop the push stream; send three tasks while it is down.
    const streamsBefore = getStreams.length;
    getStreams[getStreams.length - 1].abort();
    const later = [];
    for (const n of [1, 2, 3]) {
      later.push((await ok(tx, 'send_task', { to: 'ts-rx', content: `task ${n} while away` })).task_id);
    }
    await waitFor(() => getStreams.length > streamsBefore, 'the SDK to reconnect GET /mcp');
    await waitFor(() => received.length >= 4, 'the tasks sent while the stream was down');
    await new Promise((resolve) => setTimeout(resolve, 300)); // a duplicate would arrive right behind them

    const resumedWith = getRequests[getRequests.length - 1].lastEventId;
    const ids = received.map((p) => p.meta.task_id);
    const eventIds = received.map((p) => Number(p.meta.event_id));
    check(JSON.stringify(ids) === JSON.stringify([first.task_id, ...later]), 'notifications not once and in order',
      ids);
    check(eventIds.every((id, i) => i === 0 || id > eventIds[i - 1]), 'event ids not increasing', eventIds);
    check(resumedWith === String(eventIds[0]), 'the SDK did not resume with the last event id', resumedWith);

    const summary = {
      ok: true,
      received: ids.length,
      task_ids: ids,
      event_ids: eventIds,
      resumed_with: resumedWith,
      get_streams_opened: getStreams.length,
      other_notifications: otherNotifications,
      first_content: note.content,
      first_meta: note.meta,
    };
    for (const agent of agents) {
      await agent.transport.terminateSession().catch(() => {});
    }
    process.stdout.write(JSON.stringify(summary) + '\n');
  } finally {
    for (const agent of agents) await agent.client.close().catch(() => {});
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`channel failed: ${err instanceof Failure ? err.message : (err?.stack ?? String(err))}\n`);
    process.exit(1);
  },
);
