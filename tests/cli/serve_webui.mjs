// moekit serve's web page in headless Chromium, driven by playwright-core
// (run by tests/cli/serve_webui.sh). MODE=chat: a server with --api-key and
// resident experts (the key prompt, streamed turns, prompt-cache reuse, the
// stop button). MODE=stream: a server without a key whose experts stream
// under --memory-budget BUDGET (the panel's expert cache and memory).
// Expected answers come from direct API calls with the same greedy request,
// expected panel values from the test's own GET /v1/stats, each checked
// against references outside the server where one exists (the model's
// config.json, the budget given, the kernel's /proc/PID/status), never
// from the page itself.
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';

const env = process.env;
const MODE = env.MODE;
const base = `http://127.0.0.1:${env.PORT}`;
const auth = env.KEY ? { Authorization: `Bearer ${env.KEY}` } : {};
const T = 60000; // per wait: the sanitizer build is several times slower
let failed = 0;
function check(ok, what) {
    if (!ok) {
        console.error(`FAIL: ${what}`);
        failed = 1;
    }
}

async function stats() {
    const r = await fetch(base + '/v1/stats', { headers: auth });
    check(r.status === 200, `GET /v1/stats: ${r.status}`);
    return r.json();
}

// The process's resident set as the kernel counts it (VmRSS, kB).
function vmRSS() {
    const m = /^VmRSS:\s+([0-9]+) kB$/m.exec(readFileSync(`/proc/${env.SPID}/status`, 'utf8'));
    return m ? 1024 * Number(m[1]) : NaN;
}

// ---- the panel against a /v1/stats document ------------------------------
// The page rounds for display; a figure is read back into a number and must
// equal the document's within that rounding. Counters are compared exactly.

const units = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4 };
const int = (t) => (/^[0-9,]+$/.test(t) ? Number(t.replace(/,/g, '')) : NaN);
function near(text, re, value, tol) {
    const m = re.exec(text);
    return m !== null && Math.abs(Number(m[1]) - value) <= tol;
}
// "94.0 MiB": one decimal above bytes, so within 0.05 of the unit
function bytesNear(text, v, slack = 0) {
    const m = /^([0-9.]+) (B|KiB|MiB|GiB|TiB)$/.exec(text);
    if (!m) return false;
    const u = units[m[2]];
    return Math.abs(Number(m[1]) * u - v) <= (u === 1 ? 0 : 0.05 * u) + slack;
}

function panelErrors(p, s) {
    const e = [];
    const want = (id, ok, exp) => { if (!ok) e.push(`${id} shows ${JSON.stringify(p[id])}, /v1/stats: ${exp}`); };
    const l = s.last, t = s.tokens, x = s.experts;
    if (l) {
        want('st-tps', l.decode_tokens_per_s === null ? p['st-tps'] === '–'
            : near(p['st-tps'], /^([0-9.]+) tokens\/s$/, l.decode_tokens_per_s, 0.05), l.decode_tokens_per_s);
        want('st-ttft', near(p['st-ttft'], /^([0-9]+) ms$/, 1000 * l.time_to_first_token_s, 0.5), l.time_to_first_token_s);
        want('st-gen', int(p['st-gen']) === l.completion_tokens, l.completion_tokens);
        const c = /^([0-9,]+) of ([0-9,]+)$/.exec(p['st-cached']);
        want('st-cached', c && int(c[1]) === l.cached_tokens && int(c[2]) === l.prompt_tokens,
             `${l.cached_tokens} of ${l.prompt_tokens}`);
    }
    want('st-cache-tokens', int(p['st-cache-tokens']) === t.prompt_cached, t.prompt_cached);
    want('st-cache-share', t.prompt ? near(p['st-cache-share'], /^([0-9.]+) %$/, 100 * t.prompt_cached / t.prompt, 0.05)
                                    : p['st-cache-share'] === '–', `${t.prompt_cached} of ${t.prompt}`);
    want('st-cache-hits', int(p['st-cache-hits']) === s.prompt_cache.hits, s.prompt_cache.hits);
    want('st-total-gen', int(p['st-total-gen']) === t.generated, t.generated);
    want('st-ex-mode', p['st-ex-mode'] === (x.streaming ? 'streamed from disk' : 'all in memory'), x.streaming);
    if (x.streaming) {
        want('st-ex-hit', x.uses ? near(p['st-ex-hit'], /^([0-9.]+) %$/, 100 * x.hit_rate, 0.05) : p['st-ex-hit'] === '–',
             `${x.hits} of ${x.uses}`);
        want('st-ex-bytes', bytesNear(p['st-ex-bytes'], x.bytes_read), x.bytes_read);
    } else {
        want('st-ex-hit', p['st-ex-hit'] === 'n/a', 'not streaming');
        want('st-ex-bytes', p['st-ex-bytes'] === 'none', 'not streaming');
    }
    // the resident set moves a little between the page's poll and ours
    want('st-rss', bytesNear(p['st-rss'], s.memory.rss_bytes, 0.1 * s.memory.rss_bytes), s.memory.rss_bytes);
    want('st-limit', bytesNear(p['st-limit'], s.memory.limit_bytes), s.memory.limit_bytes);
    want('st-slots', p['st-slots'] === `${s.slots.busy} of ${s.slots.total}`, `${s.slots.busy} of ${s.slots.total}`);
    return e;
}

// Wait until the panel shows s (the page polls every 2 s; each poll after
// the figures settled shows them), or fail with what it shows.
async function panelShows(page, s, what) {
    const end = Date.now() + T;
    for (;;) {
        const { p, stamp } = await page.evaluate(() => ({
            p: Object.fromEntries([...document.querySelectorAll('#panel dd')].map((d) => [d.id, d.textContent])),
            stamp: document.getElementById('panel').dataset.updated || '',
        }));
        const e = panelErrors(p, s);
        if (!e.length) return p;
        if (Date.now() > end) {
            check(false, `${what}: the panel does not show /v1/stats: ${e.join('; ')}`);
            return p;
        }
        await page.waitForFunction((st) => (document.getElementById('panel').dataset.updated || '') !== st, stamp,
                                   { timeout: Math.max(1, end - Date.now()) }).catch(() => {});
    }
}

// Memory figures against the kernel's and the flags'.
function checkMemory(s, what) {
    const k = vmRSS();
    check(Math.abs(s.memory.rss_bytes - k) <= Math.max(0.1 * k, 4 << 20),
          `${what}: rss_bytes ${s.memory.rss_bytes}, /proc/${env.SPID}/status VmRSS ${k}`);
    if (env.BUDGET) {
        check(s.memory.limit_bytes === Number(env.BUDGET), `${what}: limit_bytes ${s.memory.limit_bytes}, --memory-budget ${env.BUDGET}`);
        // AddressSanitizer's shadow memory and quarantine are not the model's
        if (env.SANITIZED !== '1')
            check(s.memory.rss_bytes <= s.memory.limit_bytes, `${what}: resident ${s.memory.rss_bytes} over the budget ${env.BUDGET}`);
    } else {
        check(s.memory.limit_bytes > 0, `${what}: limit_bytes ${s.memory.limit_bytes}`);
    }
}

const browser = await chromium.launch({ executablePath: env.CHROMIUM, headless: true });
try {
    const page = await browser.newPage();
    page.setDefaultTimeout(T);
    const errors = [], foreign = [];
    page.on('console', (m) => {
        // the page's own 401s while it waits for the key are expected
        // network answers, which Chromium also logs as console errors
        if (m.type() === 'error' && !/status of 401/.test(m.text())) errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('request', (r) => { if (!r.url().startsWith(base + '/')) foreign.push(r.url()); });

    const resp = await page.goto(base + '/');
    check(resp.status() === 200, `GET /: ${resp.status()}`);
    const csp = resp.headers()['content-security-policy'] || '';
    check(csp.includes("script-src 'self'") && !csp.includes('unsafe'), `CSP seen by the browser: ${csp}`);

    if (env.KEY) { // the server wants a key: the page asks; a wrong one is asked again
        await page.locator('#key-box').waitFor({ state: 'visible' });
        await page.fill('#key', 'wrong-key');
        await page.press('#key', 'Enter');
        await page.waitForFunction(() => document.getElementById('status').textContent.includes('refused'));
        await page.locator('#key-box').waitFor({ state: 'visible' });
        await page.fill('#key', env.KEY);
        await page.press('#key', 'Enter');
    }
    await page.waitForFunction(() => document.getElementById('model').textContent.startsWith('tiny'));
    check(await page.locator('#key-box').isHidden(), 'the key box is shown');

    const maxTokens = MODE === 'stream' ? 100 : 400;
    await page.fill('#temperature', '0');
    await page.fill('#max-tokens', String(maxTokens));

    // every state of the answer's text while it streams, from the mutation
    // records' old values: each appendData of an event is one record even
    // when a loaded machine delivers all the events in one network chunk
    // and the observer runs once at the end (the text it would read then is
    // the whole answer; that timing, not the page, failed this check before)
    await page.evaluate(() => {
        window.__states = [];
        new MutationObserver((records) => {
            const msgs = document.querySelectorAll('.msg.assistant');
            const last = msgs[msgs.length - 1];
            for (const r of records) {
                const c = r.target.parentElement;
                if (r.type !== 'characterData' || !c || !c.classList.contains('content') ||
                    c.closest('.msg.assistant') !== last)
                    continue;
                const s = window.__states;
                if (r.oldValue && s[s.length - 1] !== r.oldValue) s.push(r.oldValue);
            }
        }).observe(document.getElementById('log'), { subtree: true, characterData: true, characterDataOldValue: true });
    });

    async function turn(text, n) {
        await page.fill('#input', text);
        await page.press('#input', 'Enter');
        const m = page.locator('.msg.assistant').nth(n);
        await m.and(page.locator('[data-done]')).waitFor();
        return {
            done: await m.getAttribute('data-done'),
            content: await m.locator('.content').textContent(),
            reasoning: await m.locator('.reasoning-text').textContent(),
            meta: await m.locator('.meta').textContent(),
            elements: await m.locator('.content').evaluate((e) => e.children.length),
        };
    }

    async function direct(messages) {
        const r = await fetch(base + '/v1/chat/completions', {
            method: 'POST',
            headers: { 'Content-Type': 'application/json', ...auth },
            body: JSON.stringify({ model: 'tiny', messages, max_tokens: maxTokens, temperature: 0 }),
        });
        const j = await r.json();
        check(r.status === 200, `direct API call: ${r.status} ${JSON.stringify(j)}`);
        return { ...j.choices[0].message, usage: j.usage };
    }

    if (MODE === 'stream') {
        // before any request the panel already says the experts stream
        const s0 = await stats();
        check(s0.experts.streaming === true && s0.experts.uses === 0 && s0.experts.bytes_read === 0,
              `before any request: experts ${JSON.stringify(s0.experts)}`);
        checkMemory(s0, 'before any request');
        await panelShows(page, s0, 'before any request');

        const q = 'Return the list.';
        const a = await turn(q, 0);
        check(a.done === 'ok', `the answer ended ${a.done}`);
        const s = await stats();
        // The expert cache's figures against the model's config.json: every
        // forward reads k experts in each of the L layers; decode steps read
        // exactly k (one sequence), the prompt's prefill and the start-up
        // warm-up forward at most all E; each miss reads one expert, its
        // three [moe_intermediate x hidden] bf16 tensors, each from the
        // 4 KiB boundary below it at most (expert_store_stream.c).
        const cfg = JSON.parse(readFileSync(`${env.MODEL}/config.json`, 'utf8'));
        const L = cfg.num_hidden_layers, k = cfg.num_experts_per_tok, E = cfg.num_experts;
        const exBytes = 3 * cfg.hidden_size * cfg.moe_intermediate_size * 2;
        const n = s.last.completion_tokens, x = s.experts, misses = x.uses - x.hits;
        check(a.meta.startsWith(`${n} tokens · `), `the page's meta ${a.meta}, /v1/stats: ${n} tokens`);
        check(x.streaming && x.uses >= n * L * k && x.uses <= (n - 1) * L * k + 2 * L * E,
              `expert uses ${x.uses} for ${n} tokens of ${L} layers x ${k} of ${E} experts`);
        check(x.hits > 0 && misses > 0 && x.hit_rate === x.hits / x.uses,
              `expert cache: ${x.hits} hits of ${x.uses} uses, hit_rate ${x.hit_rate} (a cache of a quarter of the experts)`);
        check(x.bytes_read >= misses * exBytes && x.bytes_read <= misses * (exBytes + 3 * 4096),
              `bytes_read ${x.bytes_read} for ${misses} misses of ${exBytes}-byte experts`);
        checkMemory(s, 'after the answer');
        const p = await panelShows(page, s, 'after the answer');
        console.log(`stream: panel experts ${p['st-ex-hit']} hit, ${p['st-ex-bytes']} read; memory ${p['st-rss']} of ${p['st-limit']}`);
        const m = await direct([{ role: 'user', content: q }]);
        check(a.content === m.content, `rendered ${JSON.stringify(a.content)}, the API says ${JSON.stringify(m.content)}`);
    } else {
        // turn 1: streamed, rendered in pieces, equal to the API's answer
        const q1 = 'Return the list.';
        const a1 = await turn(q1, 0);
        check(a1.done === 'ok', `turn 1 ended ${a1.done}`);
        const states = [...(await page.evaluate(() => window.__states)), a1.content];
        console.log(`turn 1: ${states.length} DOM states`);
        check(states.length >= 2 && states[states.length - 1] === a1.content &&
              states.every((s) => a1.content.startsWith(s)),
              `turn 1 was not rendered incrementally: ${states.length} states ${JSON.stringify(states.slice(0, 3))}...`);
        check(a1.elements === 0, 'the answer holds elements: model text must be text only');
        const s1 = await stats(); // before the direct call: the page's answer is the last
        const m1 = await direct([{ role: 'user', content: q1 }]);
        check(m1.content !== null && a1.content === m1.content,
              `turn 1 rendered ${JSON.stringify(a1.content)}, the API says ${JSON.stringify(m1.content)}`);
        check(a1.reasoning === (m1.reasoning_content || ''), `turn 1 reasoning ${JSON.stringify(a1.reasoning)}`);
        check(a1.meta.startsWith(`${m1.usage.completion_tokens} tokens · prompt ${m1.usage.prompt_tokens} tokens, `),
              `turn 1 meta: ${a1.meta}; the API's usage: ${JSON.stringify(m1.usage)}`);
        check(s1.last.completion_tokens === m1.usage.completion_tokens && s1.last.prompt_tokens === m1.usage.prompt_tokens &&
              s1.tokens.generated === m1.usage.completion_tokens && s1.experts.streaming === false,
              `/v1/stats after turn 1: ${JSON.stringify(s1)}; the API's usage: ${JSON.stringify(m1.usage)}`);

        // turn 2: the conversation is resent; the prompt cache serves its start
        const a2 = await turn('And then?', 1);
        check(a2.done === 'ok' && a2.content.length > 0, `turn 2 ended ${a2.done}: ${JSON.stringify(a2.content)}`);
        const reused = /, ([0-9]+) from the prompt cache/.exec(a2.meta);
        check(reused && Number(reused[1]) > 0, `turn 2 meta: ${a2.meta}`);
        const m2 = await direct([{ role: 'user', content: q1 }, { role: 'assistant', content: a1.content },
                                 { role: 'user', content: 'And then?' }]);
        check(a2.content === m2.content, `turn 2 rendered ${JSON.stringify(a2.content)}, the API says ${JSON.stringify(m2.content)}`);
        const s2 = await stats();
        check(s2.prompt_cache.hits >= 1 && s2.tokens.prompt_cached >= Number(reused && reused[1]),
              `/v1/stats after turn 2: prompt cache ${JSON.stringify(s2.prompt_cache)}, tokens ${JSON.stringify(s2.tokens)}`);
        checkMemory(s2, 'after turn 2');
        const p = await panelShows(page, s2, 'after turn 2');
        console.log(`chat: panel ${p['st-tps']}, prompt cache ${p['st-cache-hits']} hits, memory ${p['st-rss']}`);

        // reasoning: the server runs with --test-output, so the test adds a
        // fixed answer with a thinking block to the page's request on its
        // way (the tiny model seldom reasons); the page folds it apart from
        // the answer, as the API splits it
        const forced = '<think>\nTwo and two make four.\n</think>\n\nFour.';
        const addForced = (route) => {
            const b = JSON.parse(route.request().postData());
            route.continue({ postData: JSON.stringify({ ...b, moekit_test_output: forced }) });
        };
        await page.route('**/v1/chat/completions', addForced);
        const a4 = await turn('What is two and two?', 2);
        await page.unroute('**/v1/chat/completions', addForced);
        const r = await fetch(base + '/v1/chat/completions', {
            method: 'POST',
            headers: { 'Content-Type': 'application/json', ...auth },
            body: JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: 'What is two and two?' }],
                                   max_tokens: maxTokens, temperature: 0, moekit_test_output: forced }),
        });
        const m4 = (await r.json()).choices[0].message;
        check(a4.done === 'ok' && m4.reasoning_content && a4.reasoning === m4.reasoning_content && a4.content === m4.content,
              `reasoning turn: page ${JSON.stringify([a4.reasoning, a4.content])}, the API ${JSON.stringify(m4)}`);
        const det = page.locator('.msg.assistant').nth(2).locator('details.reasoning');
        check(await det.isVisible() && !(await det.evaluate((d) => d.open)) &&
              await page.locator('.msg.assistant').nth(2).locator('.reasoning-text').isHidden() &&
              (await det.locator('summary').textContent()) === `Reasoning (${m4.reasoning_content.length} characters)`,
              'the reasoning is not shown folded under its summary');
        await det.locator('summary').click();
        check(await page.locator('.msg.assistant').nth(2).locator('.reasoning-text').isVisible(),
              'the folded reasoning does not open on a click');

        // stop: in a new chat (a short prompt, room for a long answer), the
        // button is clicked from inside the page the moment the first text
        // shows, so it lands while the server still generates; the test adds
        // ignore_eos to the page's request on its way, so the answer cannot
        // end early by itself.
        await page.click('#new-chat');
        check(await page.locator('#log > *').count() === 0, 'New chat left messages');
        await page.route('**/v1/chat/completions', (route) => {
            const b = JSON.parse(route.request().postData());
            route.continue({ postData: JSON.stringify({ ...b, ignore_eos: true }) });
        });
        const long = 4000; // the default context is 4096
        await page.fill('#max-tokens', String(long));
        await page.evaluate(() => {
            window.__stopped = null;
            const o = new MutationObserver(() => {
                const m = document.querySelector('.msg.assistant');
                const t = m && m.querySelector('.content').textContent;
                if (t && !window.__stopped) {
                    window.__stopped = t.length;
                    o.disconnect();
                    document.getElementById('stop').click();
                }
            });
            o.observe(document.getElementById('log'), { childList: true, subtree: true, characterData: true });
        });
        await page.fill('#input', 'Go on.');
        await page.press('#input', 'Enter');
        const a3 = page.locator('.msg.assistant').first();
        await a3.and(page.locator('[data-done]')).waitFor();
        check(await a3.getAttribute('data-done') === 'error' && (await a3.locator('.error').textContent()) === 'stopped',
              'the stop button did not stop the answer');
        check(await page.evaluate(() => window.__stopped) > 0, 'no text before the stop');
        check(await page.locator('#send').isEnabled() && await page.locator('#stop').isDisabled(),
              'after the stop the page is not ready for the next message');
        // the server notices the closed stream and frees the slot early
        let s3;
        const end = Date.now() + T;
        do {
            s3 = await stats();
            if (s3.slots.busy) await new Promise((r) => setTimeout(r, 50));
        } while (s3.slots.busy && Date.now() < end);
        check(s3.slots.busy === 0, 'a slot is still busy after the stop button');
        check(s3.last.completion_tokens > 0 && s3.last.completion_tokens < long,
              `the stopped answer generated ${s3.last.completion_tokens} of ${long} tokens`);
        console.log(`stop: ${s3.last.completion_tokens} of ${long} tokens generated`);
    }

    check(errors.length === 0, `console errors: ${JSON.stringify(errors)}`);
    check(foreign.length === 0, `requests outside the server: ${JSON.stringify(foreign)}`);
} finally {
    await browser.close();
}
process.exit(failed);
