#!/usr/bin/env node
// Interop round trip: the official TypeScript MCP SDK (Client + StreamableHTTPClientTransport) against CommHub.
//
// Usage: node roundtrip.mjs <base-url> <token-a> <token-b> [alias-a] [alias-b]
//   or env COMMHUB_URL, COMMHUB_TOKEN_A, COMMHUB_TOKEN_B (COMMHUB_ALIAS_A, COMMHUB_ALIAS_B optional).
// <base-url> is the hub root (http://127.0.0.1:8080) or the endpoint itself (.../mcp).
//
// Two agents connect (initialize), list tools, claim aliases with report_status; A sends a task to B, B sees it
// in get_inbox and answers with send_reply status=done, A sees the reply. Both sessions are ended with
// DELETE /mcp (transport.terminateSession) and the transports closed. On success one JSON line goes to stdout
// and the exit code is 0; any failure (including an isError tool result) prints a message to stderr, exit 1.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { readFileSync } from 'node:fs';

const SPEC_TOOLS = [
  'report_status', 'whoami', 'get_all_status', 'send_task', 'send_message', 'send_reply', 'broadcast',
  'get_inbox', 'ack_inbox', 'report_completion', 'get_task', 'list_tasks', 'cancel_task',
  'get_completions', 'list_nodes',
];

const SDK_VERSION = JSON.parse(readFileSync(
  new URL('./node_modules/@modelcontextprotocol/sdk/package.json', import.meta.url), 'utf8')).version;

class Failure extends Error {}

function check(condition, message, detail) {
  if (!condition) {
    throw new Failure(detail === undefined ? message : `${message}: ${JSON.stringify(detail)}`);
  }
}

function endpoint(base) {
  const url = new URL(base);
  if (!url.pathname.replace(/\/+$/, '').endsWith('/mcp')) {
    url.pathname = url.pathname.replace(/\/+$/, '') + '/mcp';
  }
  return url;
}

async function connect(url, token, name) {
  const transport = new StreamableHTTPClientTransport(url, {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  const client = new Client({ name, version: '1.0.0' });
  await client.connect(transport); // initialize + notifications/initialized
  check(transport.sessionId, `${name}: the server issued no Mcp-Session-Id at initialize`);
  return { name, client, transport, sessionId: transport.sessionId };
}

// Call a tool that must succeed; returns its structuredContent (checked against the JSON text part).
async function ok(agent, tool, args = {}) {
  const result = await agent.client.callTool({ name: tool, arguments: args });
  const text = (result.content ?? []).find((c) => c.type === 'text')?.text;
  check(!result.isError, `${agent.name}: ${tool} returned isError`, text ?? result);
  check(result.structuredContent && typeof result.structuredContent === 'object',
    `${agent.name}: ${tool} returned no structuredContent`, result);
  check(text !== undefined, `${agent.name}: ${tool} returned no text content`, result);
  check(JSON.stringify(JSON.parse(text)) === JSON.stringify(result.structuredContent),
    `${agent.name}: ${tool} text content differs from structuredContent`, result);
  return result.structuredContent;
}

async function shutdown(agent) {
  // close() alone only aborts in-flight requests; terminateSession() is what sends DELETE /mcp.
  let error;
  try {
    await agent.transport.terminateSession();
  } catch (err) {
    error = err;
  }
  await agent.client.close();
  if (error) throw error;
  check(agent.transport.sessionId === undefined, `${agent.name}: session still set after DELETE /mcp`);
}

async function main() {
  const [argUrl, argA, argB, argAliasA, argAliasB] = process.argv.slice(2);
  const base = argUrl ?? process.env.COMMHUB_URL;
  const tokenA = argA ?? process.env.COMMHUB_TOKEN_A;
  const tokenB = argB ?? process.env.COMMHUB_TOKEN_B;
  const aliasA = argAliasA ?? process.env.COMMHUB_ALIAS_A ?? 'ts-alpha';
  const aliasB = argAliasB ?? process.env.COMMHUB_ALIAS_B ?? 'ts-beta';
  if (!base || !tokenA || !tokenB) {
    throw new Failure('usage: node roundtrip.mjs <base-url> <token-a> <token-b> [alias-a] [alias-b] '
      + '(or COMMHUB_URL, COMMHUB_TOKEN_A, COMMHUB_TOKEN_B)');
  }
  const url = endpoint(base);
  const agents = [];
  try {
    const a = await connect(url, tokenA, 'ts-roundtrip-a');
    agents.push(a);
    const b = await connect(url, tokenB, 'ts-roundtrip-b');
    agents.push(b);
    check(a.sessionId !== b.sessionId, 'both agents got the same Mcp-Session-Id', a.sessionId);
    const protocolVersion = a.transport.protocolVersion;
    check(protocolVersion, 'no protocol version negotiated');
    check(b.transport.protocolVersion === protocolVersion, 'agents negotiated different protocol versions',
      [protocolVersion, b.transport.protocolVersion]);
    const serverInfo = a.client.getServerVersion();
    check(serverInfo?.name, 'initialize returned no serverInfo', serverInfo);
    check(a.client.getServerCapabilities()?.tools, 'server does not advertise the tools capability',
      a.client.getServerCapabilities());
    await a.client.ping();

    const { tools } = await a.client.listTools();
    const names = tools.map((t) => t.name);
    const missing = SPEC_TOOLS.filter((n) => !names.includes(n));
    check(missing.length === 0, 'tools/list misses SPEC §6 tools', missing);
    for (const t of tools) {
      check(t.inputSchema?.type === 'object', `tool ${t.name} has no object inputSchema`, t.inputSchema);
    }

    const statusA = await ok(a, 'report_status', { alias: aliasA, status: 'idle', agent: 'ts-sdk', model: 'none' });
    check(statusA.alias === aliasA, 'report_status A claimed another alias', statusA);
    const statusB = await ok(b, 'report_status', { alias: aliasB, status: 'idle', agent: 'ts-sdk', model: 'none' });
    check(statusB.alias === aliasB, 'report_status B claimed another alias', statusB);
    const whoB = await ok(b, 'whoami');
    check(whoB.alias === aliasB && whoB.session_id === b.sessionId, 'whoami B does not match its session', whoB);

    const content = `ts-sdk roundtrip ${Date.now()}`;
    const sent = await ok(a, 'send_task', { to: aliasB, content, priority: 'high', title: 'ts roundtrip' });
    check(typeof sent.task_id === 'string' && sent.task_id, 'send_task returned no task_id', sent);
    check(sent.recipient_online === true, 'send_task: recipient B not reported online', sent);

    const inboxB = await ok(b, 'get_inbox', { limit: 10 });
    const taskItem = (inboxB.items ?? []).find((i) => i.task_id === sent.task_id);
    check(taskItem, 'B get_inbox does not show the task', inboxB);
    check(taskItem.content === content && taskItem.kind === 'task', 'B inbox item is not the task sent', taskItem);
    check(taskItem.from === aliasA && taskItem.to === aliasB, 'B inbox item is not from A to B', taskItem);

    const reply = await ok(b, 'send_reply', { task_id: sent.task_id, content: 'done from ts-sdk', status: 'done' });

    const inboxA = await ok(a, 'get_inbox', { limit: 10, wait_seconds: 5 });
    const replyItem = (inboxA.items ?? []).find((i) => i.task_id === sent.task_id && i.kind === 'reply');
    check(replyItem, 'A get_inbox does not show the reply', inboxA);
    check(replyItem.content === 'done from ts-sdk' && replyItem.status === 'done' && replyItem.from === aliasB,
      'A reply item differs', replyItem);

    const task = await ok(a, 'get_task', { task_id: sent.task_id });
    const taskStatus = task.task?.status ?? task.status;

    const sessions = agents.map((x) => x.sessionId);
    while (agents.length) await shutdown(agents.pop());

    const summary = {
      ok: true,
      sdk_version: SDK_VERSION,
      protocol_version: protocolVersion,
      server: serverInfo,
      sessions,
      tools: names.length,
      aliases: [statusA.alias, statusB.alias],
      task_id: sent.task_id,
      task_message_id: sent.message_id,
      reply_message_id: reply.message_id ?? null,
      reply_received: true,
      reply_status: replyItem.status,
      task_status: taskStatus,
      sessions_terminated: true,
    };
    process.stdout.write(JSON.stringify(summary) + '\n');
  } finally {
    for (const agent of agents) {
      await agent.client.close().catch(() => {});
    }
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    const detail = err instanceof Failure ? err.message : (err?.stack ?? String(err));
    process.stderr.write(`roundtrip failed: ${detail}\n`);
    process.exit(1);
  },
);
