// moekit's web page: a chat over POST /v1/chat/completions (streamed, SSE)
// and a live panel of GET /v1/stats. Model output is only ever set as text
// (text nodes, textContent), never parsed as HTML. The conversation lives in
// this tab's memory and is sent whole each turn, so the server's prompt
// cache reuses the previous turns. An API key, when the server wants one,
// is asked for on the first 401 and kept in memory only.
'use strict';

const $ = (id) => document.getElementById(id);
const state = {
  key: null,          // the API key, once given
  model: null,        // the model's id from /v1/models
  messages: [],       // the conversation: {role, content, reasoning_content?}
  abort: null,        // the running answer's AbortController
  keyWaiters: [],     // promises waiting for the key
};

// ---- the API key ---------------------------------------------------------

function askKey() {
  $('key-box').hidden = false;
  $('key').focus();
  return new Promise((resolve) => state.keyWaiters.push(resolve));
}

$('key-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const k = $('key').value.trim();
  if (!k) return;
  state.key = k;
  $('key').value = '';
  $('key-box').hidden = true;
  const w = state.keyWaiters;
  state.keyWaiters = [];
  w.forEach((resolve) => resolve());
});

// fetch with the key; on 401 ask for it (again) and retry
async function api(path, init = {}) {
  for (;;) {
    const headers = Object.assign({}, init.headers || {});
    if (state.key) headers.Authorization = 'Bearer ' + state.key;
    const res = await fetch(path, Object.assign({}, init, { headers }));
    if (res.status !== 401) return res;
    await res.body?.cancel();
    setStatus(state.key ? 'the API key was refused' : 'an API key is needed');
    await askKey();
  }
}

async function errorText(res) {
  try {
    const j = await res.json();
    return (j.error && (j.error.message || j.error.type)) || JSON.stringify(j);
  } catch {
    return `HTTP ${res.status}`;
  }
}

function setStatus(t) { $('status').textContent = t; }

// ---- start-up: wait for the model, then name it --------------------------

async function start() {
  for (;;) {
    let ok = false;
    try {
      const h = await fetch('/health');
      ok = h.status === 200;
      if (!ok) setStatus('loading the model…');
    } catch {
      setStatus('server unreachable, retrying…');
    }
    if (ok) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  const res = await api('/v1/models');
  if (!res.ok) {
    setStatus('models: ' + await errorText(res));
    return;
  }
  const m = (await res.json()).data[0];
  state.model = m.id;
  $('model').textContent = m.id + (m.meta ? ` · ${m.meta.layout} · ctx ${m.meta.n_ctx}` : '');
  setStatus('ready');
  pollStats();
}

// ---- the chat ------------------------------------------------------------

function addMessage(role, text) {
  const div = document.createElement('div');
  div.className = 'msg ' + role;
  const content = document.createElement('div');
  content.className = 'content';
  content.textContent = text;
  div.append(content);
  $('log').append(div);
  div.scrollIntoView({ block: 'end' });
  return div;
}

// An assistant message being streamed: text nodes that deltas append to.
function answerView() {
  const div = document.createElement('div');
  div.className = 'msg assistant streaming';
  const det = document.createElement('details');
  det.className = 'reasoning';
  det.hidden = true;
  const sum = document.createElement('summary');
  sum.textContent = 'Reasoning';
  const rt = document.createElement('div');
  rt.className = 'reasoning-text';
  const rnode = document.createTextNode('');
  rt.append(rnode);
  det.append(sum, rt);
  const content = document.createElement('div');
  content.className = 'content';
  const cnode = document.createTextNode('');
  content.append(cnode);
  const meta = document.createElement('div');
  meta.className = 'meta';
  div.append(det, content, meta);
  $('log').append(div);
  return { div, det, sum, rnode, cnode, meta };
}

function busy(on) {
  $('send').disabled = on;
  $('stop').disabled = !on;
}

async function send(text) {
  state.messages.push({ role: 'user', content: text });
  addMessage('user', text);
  const v = answerView();
  const body = {
    model: state.model,
    messages: state.messages,
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: Number($('max-tokens').value) || 1024,
    temperature: Number($('temperature').value),
  };
  if (!$('thinking').checked) body.chat_template_kwargs = { enable_thinking: false };
  const ctl = new AbortController();
  state.abort = ctl;
  busy(true);
  let reasoning = '', content = '', usage = null, finish = null, failed = null;
  try {
    const res = await api('/v1/chat/completions', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      signal: ctl.signal,
    });
    if (!res.ok) throw new Error(await errorText(res));
    await readEvents(res.body, (ev) => {
      if (ev.error) throw new Error(ev.error.message || 'the server ended the answer with an error');
      if (ev.usage) usage = ev.usage;
      const ch = ev.choices && ev.choices[0];
      if (!ch) return;
      const d = ch.delta || {};
      if (d.reasoning_content) {
        reasoning += d.reasoning_content;
        v.rnode.appendData(d.reasoning_content);
        v.det.hidden = false;
      }
      if (d.content) {
        content += d.content;
        v.cnode.appendData(d.content);
      }
      for (const tc of d.tool_calls || []) {
        const t = `\n[tool call ${tc.function.name}(${tc.function.arguments})]`;
        content += t;
        v.cnode.appendData(t);
      }
      if (ch.finish_reason) finish = ch.finish_reason;
      v.div.scrollIntoView({ block: 'end' });
    }, ctl.signal);
  } catch (e) {
    failed = ctl.signal.aborted ? 'stopped' : String(e.message || e);
  }
  state.abort = null;
  busy(false);
  v.div.classList.remove('streaming');
  v.div.dataset.done = failed ? 'error' : 'ok';
  v.sum.textContent = `Reasoning (${reasoning.length} characters)`;
  // the answer, even a stopped one, is part of the conversation: the next
  // turn then extends what the server's slot holds
  const msg = { role: 'assistant', content };
  if (reasoning) msg.reasoning_content = reasoning;
  if (content || reasoning) state.messages.push(msg);
  else state.messages.pop(); // nothing came back: the question is not kept
  const parts = [];
  if (usage) {
    const cached = (usage.prompt_tokens_details && usage.prompt_tokens_details.cached_tokens) || 0;
    parts.push(`${usage.completion_tokens} tokens`,
      `prompt ${usage.prompt_tokens} tokens, ${cached} from the prompt cache`);
  }
  if (finish === 'length') parts.push('stopped at max tokens');
  v.meta.textContent = parts.join(' · ');
  if (failed) {
    const e = document.createElement('div');
    e.className = 'error';
    e.textContent = failed;
    v.div.append(e);
  }
  pollStats(); // the answer's figures now, not at the next tick
}

// Server-Sent Events: `data: JSON` blocks split by blank lines, until
// `data: [DONE]`. Each event is handed to onEvent as parsed JSON.
async function readEvents(stream, onEvent, signal) {
  const reader = stream.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (signal.aborted) throw new Error('stopped');
    if (done) break;
    buf += dec.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
    let cut;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).replace(/^ /, '')).join('\n');
      if (!data) continue;
      if (data === '[DONE]') return;
      onEvent(JSON.parse(data));
    }
  }
  throw new Error('the stream ended before [DONE]');
}

$('form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('input').value.trim();
  if (!text || state.abort || !state.model) return;
  $('input').value = '';
  send(text);
});
$('input').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $('form').requestSubmit();
  }
});
$('stop').addEventListener('click', () => state.abort && state.abort.abort());
$('new-chat').addEventListener('click', () => {
  if (state.abort) state.abort.abort();
  state.messages = [];
  $('log').replaceChildren();
});

// ---- the panel -----------------------------------------------------------

function bytes(n) {
  if (n === null || n === undefined) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + ' ' + u[i];
}
const num = (n) => (n === null || n === undefined ? '–' : n.toLocaleString('en-US'));
const pct = (x) => (x === null || x === undefined ? '–' : (100 * x).toFixed(1) + ' %');
function show(id, text) { $(id).textContent = text; }

let pollTimer = null;
async function pollStats() {
  clearTimeout(pollTimer);
  try {
    if (!state.key && state.keyWaiters.length) return; // waiting for the key
    const res = await api('/v1/stats');
    if (res.ok) render(await res.json());
  } catch {
    // the server went away: the next poll tries again
  } finally {
    pollTimer = setTimeout(pollStats, 2000);
  }
}

function render(s) {
  const l = s.last;
  show('st-tps', l && l.decode_tokens_per_s !== null ? l.decode_tokens_per_s.toFixed(1) + ' tokens/s' : '–');
  show('st-ttft', l ? (1000 * l.time_to_first_token_s).toFixed(0) + ' ms' : '–');
  show('st-gen', l ? num(l.completion_tokens) : '–');
  show('st-cached', l ? `${num(l.cached_tokens)} of ${num(l.prompt_tokens)}` : '–');
  const t = s.tokens;
  show('st-cache-tokens', num(t.prompt_cached));
  show('st-cache-share', t.prompt ? pct(t.prompt_cached / t.prompt) : '–');
  show('st-cache-hits', num(s.prompt_cache.hits));
  const x = s.experts;
  show('st-ex-mode', x.streaming ? 'streamed from disk' : 'all in memory');
  show('st-ex-hit', !x.streaming ? 'n/a' : x.uses ? pct(x.hit_rate) : '–'); // no rate before a use
  show('st-ex-bytes', x.streaming ? bytes(x.bytes_read) : 'none');
  show('st-rss', bytes(s.memory.rss_bytes));
  show('st-limit', bytes(s.memory.limit_bytes));
  show('st-slots', `${s.slots.busy} of ${s.slots.total}` + (s.slots.queued ? `, ${s.slots.queued} queued` : ''));
  show('st-total-gen', num(t.generated));
  $('panel').dataset.updated = String(Date.now());
}

start();
