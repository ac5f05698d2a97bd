// What to paste into each agent client for a new token (the same content as the README's "Connecting agents").

import { h } from "./dom.js";

// The agent's token lives in COMMHUB_AGENT_TOKEN: COMMHUB_TOKEN is a person's own token (the commhub CLI's), and
// the two never share a name.
/** The configurations for one token: [{client, where, text}]. */
export function agentConfigs(token, alias) {
  const url = `${location.origin}/mcp`;
  const name = alias || "<ALIAS>";
  return [
    {
      client: "Environment",
      where: "the shell that starts the agent (the agent's token, not your COMMHUB_TOKEN)",
      text: `export COMMHUB_AGENT_TOKEN=${token}`,
    },
    {
      client: "Claude Code",
      where: ".mcp.json in the project",
      text: JSON.stringify({ mcpServers: { commhub: { type: "http", url, headers: { Authorization: "Bearer ${COMMHUB_AGENT_TOKEN}" } } } }, null, 2),
    },
    {
      client: "Claude Code (woken by CommHub)",
      where: "start it with the channel (needs a claude.ai login and channels enabled; see the README)",
      text: "claude --dangerously-load-development-channels server:commhub",
    },
    {
      client: "Claude Code (one command)",
      where: "a terminal",
      text: `claude mcp add --transport http commhub ${url} --header "Authorization: Bearer ${token}"`,
    },
    {
      client: "Codex",
      where: "~/.codex/config.toml",
      text: `[mcp_servers.commhub]\nurl = "${url}"\nbearer_token_env_var = "COMMHUB_AGENT_TOKEN"`,
    },
    {
      client: "Gemini CLI",
      where: "~/.gemini/settings.json (httpUrl = Streamable HTTP)",
      text: JSON.stringify({ mcpServers: { commhub: { httpUrl: url, headers: { Authorization: "Bearer $COMMHUB_AGENT_TOKEN" } } } }, null, 2),
    },
    {
      client: "Codex or Gemini CLI (woken by CommHub)",
      where: "a terminal with COMMHUB_AGENT_TOKEN set: commhub run keeps the agent at work for the alias",
      text: `commhub run codex --alias ${name} --url ${location.origin}\n# or\ncommhub run gemini --alias ${name} --url ${location.origin}`,
    },
    {
      client: "Agent rules",
      where: "CLAUDE.md / AGENTS.md / GEMINI.md",
      text: `You are connected to CommHub (MCP server "commhub"). Your alias is ${name}.\n`
        + `At the start, call report_status {"alias": "${name}", "status": "idle"}, then get_inbox.\n`
        + "Reply to each task with send_reply {\"task_id\": …, \"status\": \"done\", \"content\": \"…\"}.",
    },
  ];
}

async function copy(text, block, button) {
  try {
    await navigator.clipboard.writeText(text); // only on https or localhost
  } catch {
    // Plain http on another host: select the block and use the older copy command.
    const range = document.createRange();
    range.selectNodeContents(block);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    if (!document.execCommand("copy")) { button.textContent = "Selected: press Ctrl+C"; return; }
  }
  button.textContent = "Copied";
}

/** The configurations as copyable blocks. */
export function configBlocks(token, alias) {
  return agentConfigs(token, alias).map(({ client, where, text }) => {
    const code = h("code", {}, text);
    const button = h("button", { type: "button", class: "secondary small", "aria-label": `Copy the ${client} configuration` }, "Copy");
    button.addEventListener("click", () => copy(text, code, button));
    return h("section", { class: "config", dataset: { client } },
      h("div", { class: "config-head" }, h("h3", {}, client), h("span", { class: "muted small" }, where), button),
      h("pre", { tabindex: "0" }, code));
  });
}
