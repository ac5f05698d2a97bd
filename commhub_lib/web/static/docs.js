// The API page at /docs: renders /openapi.json (web/routes.py). A file, not inline: the page's CSP allows
// scripts only from this origin.
"use strict";
let SPEC = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function resolve(schema) {
  let seen = 0;
  while (schema && schema.$ref && seen++ < 20) schema = SPEC.components.schemas[schema.$ref.split("/").pop()];
  return schema || {};
}

function typeOf(schema) {
  schema = resolve(schema);
  if (schema.enum) return schema.enum.map(v => JSON.stringify(v)).join(" | ");
  if (schema.const !== undefined) return JSON.stringify(schema.const);
  if (schema.anyOf) return schema.anyOf.map(typeOf).join(" | ");
  if (schema.type === "array") return typeOf(schema.items || {}) + "[]";
  if (schema.type === "object" && schema.title) return schema.title;
  return schema.type || schema.title || "any";
}

function fieldTable(schema) {
  schema = resolve(schema);
  const props = schema.properties || {};
  if (!Object.keys(props).length) return el("p", {}, typeOf(schema));
  const required = new Set(schema.required || []);
  const table = el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "notes")));
  for (const [name, prop] of Object.entries(props)) {
    const notes = [required.has(name) ? "required" : "", prop.description || resolve(prop).description || "",
                   prop.default !== undefined && prop.default !== null ? "default " + JSON.stringify(prop.default) : "",
                   prop.maxLength ? "max " + prop.maxLength + " chars" : ""].filter(Boolean).join("; ");
    table.append(el("tr", {}, el("td", {}, el("code", {}, name)), el("td", {}, typeOf(prop)), el("td", {}, notes)));
  }
  return table;
}

function operation(path, method, op) {
  const body = el("div", { class: "body" });
  if (op.description) body.append(el("p", {}, op.description));
  const auth = (op.security || []).map(s => Object.keys(s)[0] || "none").join(" or ");
  body.append(el("p", {}, "Auth: ", auth || "none"));
  if (op.parameters && op.parameters.length) {
    const table = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, "type"),
                                      el("th", {}, "notes")));
    for (const p of op.parameters) {
      table.append(el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in), el("td", {}, typeOf(p.schema)),
                      el("td", {}, [p.required ? "required" : "", p.description || ""].filter(Boolean).join("; "))));
    }
    body.append(el("h4", {}, "Parameters"), table);
  }
  const request = op.requestBody && op.requestBody.content["application/json"];
  if (request) body.append(el("h4", {}, "Request body (JSON)"), fieldTable(request.schema));
  for (const [status, answer] of Object.entries(op.responses || {})) {
    const media = answer.content ? Object.keys(answer.content)[0] : "";
    body.append(el("h4", {}, `${status} ${media}`), el("p", {}, answer.description || ""));
    if (media === "application/json" && status.startsWith("2")) body.append(fieldTable(answer.content[media].schema));
  }
  return el("details", { id: op.operationId },
            el("summary", {}, el("span", { class: "method " + method }, method), el("span", { class: "path" }, path),
               el("span", { class: "summary" }, op.summary || "")), body);
}

async function main() {
  try {
    const response = await fetch("/openapi.json");
    SPEC = await response.json();
  } catch (err) {
    document.getElementById("error").textContent = "Could not load /openapi.json: " + err;
    return;
  }
  document.getElementById("intro").textContent = `${SPEC.info.title} ${SPEC.info.version}. ${SPEC.info.description}`;
  const main = document.getElementById("ops");
  const groups = new Map((SPEC.tags || []).map(t => [t.name, { tag: t, ops: [] }]));
  for (const [path, methods] of Object.entries(SPEC.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const name = (op.tags || ["other"])[0];
      if (!groups.has(name)) groups.set(name, { tag: { name, description: "" }, ops: [] });
      groups.get(name).ops.push(operation(path, method, op));
    }
  }
  for (const { tag, ops } of groups.values()) {
    if (!ops.length) continue;
    main.append(el("h2", { id: "tag-" + tag.name }, tag.name + " ", el("small", {}, tag.description || "")), ...ops);
  }
  // A link to #operationId opens that operation.
  const target = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if (target && target.tagName === "DETAILS") { target.open = true; target.scrollIntoView(); }
}
main();
