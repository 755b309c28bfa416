// moekit serve's web page in headless Chromium, driven by playwright-core
// (run by tests/cli/serve_webui.sh, which starts the server with --api-key).
// The expected answer comes from a direct API call with the same greedy
// request (and, through the shell script, the page's files from the source
// tree), never from the page itself.
import { chromium } from 'playwright-core';

const env = process.env;
const base = `http://127.0.0.1:${env.PORT}`;
const T = 30000; // per wait: the sanitizer build is several times slower
let failed = 0;
function check(ok, what) {
    if (!ok) {
        console.error(`FAIL: ${what}`);
        failed = 1;
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

    // the server wants a key: the page asks; a wrong one is asked again
    await page.locator('#key-box').waitFor({ state: 'visible' });
    await page.fill('#key', 'wrong-key');
    await page.press('#key', 'Enter');
    await page.waitForFunction(() => document.getElementById('status').textContent.includes('refused'));
    await page.locator('#key-box').waitFor({ state: 'visible' });
    await page.fill('#key', env.KEY);
    await page.press('#key', 'Enter');
    await page.waitForFunction(() => document.getElementById('model').textContent.startsWith('tiny'));
    check(await page.locator('#key-box').isHidden(), 'the key box is still shown');

    const maxTokens = 400;
    await page.fill('#temperature', '0');
    await page.fill('#max-tokens', String(maxTokens));

    // every DOM state of the answer while it streams, before it is marked done
    await page.evaluate(() => {
        window.__states = [];
        new MutationObserver(() => {
            const msgs = document.querySelectorAll('.msg.assistant');
            const m = msgs[msgs.length - 1];
            if (!m || m.dataset.done) return;
            const t = m.querySelector('.content').textContent;
            const s = window.__states;
            if (t && s[s.length - 1] !== t) s.push(t);
        }).observe(document.getElementById('log'), { childList: true, subtree: true, characterData: true });
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
            headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${env.KEY}` },
            body: JSON.stringify({ model: 'tiny', messages, max_tokens: maxTokens, temperature: 0 }),
        });
        const j = await r.json();
        check(r.status === 200, `direct API call: ${r.status} ${JSON.stringify(j)}`);
        return { ...j.choices[0].message, usage: j.usage };
    }

    // turn 1: streamed, rendered in pieces, equal to the API's answer
    const q1 = 'Return the list.';
    const a1 = await turn(q1, 0);
    check(a1.done === 'ok', `turn 1 ended ${a1.done}`);
    const states = await page.evaluate(() => window.__states);
    console.log(`turn 1: ${states.length} DOM states`);
    check(states.length >= 2 && states[states.length - 1] === a1.content &&
          states.every((s) => a1.content.startsWith(s)),
          `turn 1 was not rendered incrementally: ${states.length} states ${JSON.stringify(states.slice(0, 3))}...`);
    check(a1.elements === 0, 'the answer holds elements: model text must be text only');
    const m1 = await direct([{ role: 'user', content: q1 }]);
    check(m1.content !== null && a1.content === m1.content,
          `turn 1 rendered ${JSON.stringify(a1.content)}, the API says ${JSON.stringify(m1.content)}`);
    check(a1.reasoning === (m1.reasoning_content || ''), `turn 1 reasoning ${JSON.stringify(a1.reasoning)}`);
    check(a1.meta.startsWith(`${m1.usage.completion_tokens} tokens · prompt ${m1.usage.prompt_tokens} tokens, `),
          `turn 1 meta: ${a1.meta}; the API's usage: ${JSON.stringify(m1.usage)}`);

    // the panel: numbers from /v1/stats
    await page.waitForFunction(() => /^[0-9.]+ tokens\/s$/.test(document.getElementById('st-tps').textContent));
    const panel = await page.evaluate(() => Object.fromEntries(
        [...document.querySelectorAll('#panel dd')].map((d) => [d.id, d.textContent])));
    check(/^[0-9]+ ms$/.test(panel['st-ttft']), `time to first token: ${panel['st-ttft']}`);
    check(/^[0-9.]+ (MiB|GiB)$/.test(panel['st-rss']) && /^[0-9.]+ (MiB|GiB|TiB)$/.test(panel['st-limit']),
          `memory: ${panel['st-rss']} / ${panel['st-limit']}`);
    check(panel['st-ex-mode'] === 'all in memory', `experts: ${panel['st-ex-mode']}`);
    check(/^[0-9,]+$/.test(panel['st-total-gen']) && Number(panel['st-total-gen'].replace(/,/g, '')) >= m1.usage.completion_tokens,
          `tokens generated: ${panel['st-total-gen']}`);

    // turn 2: the conversation is resent; the prompt cache serves its start
    const a2 = await turn('And then?', 1);
    check(a2.done === 'ok' && a2.content.length > 0, `turn 2 ended ${a2.done}: ${JSON.stringify(a2.content)}`);
    const reused = /, ([0-9]+) from the prompt cache/.exec(a2.meta);
    check(reused && Number(reused[1]) > 0, `turn 2 meta: ${a2.meta}`);
    await page.waitForFunction(() => /^[1-9][0-9,]* of [0-9,]+$/.test(document.getElementById('st-cached').textContent));
    const m2 = await direct([{ role: 'user', content: q1 }, { role: 'assistant', content: a1.content },
                             { role: 'user', content: 'And then?' }]);
    check(a2.content === m2.content, `turn 2 rendered ${JSON.stringify(a2.content)}, the API says ${JSON.stringify(m2.content)}`);

    // stop: a long answer is cancelled by the button, the slot comes free.
    // The tiny model may end any answer early: the test adds ignore_eos to
    // the page's request on its way, so the answer is long.
    await page.route('**/v1/chat/completions', (route) => {
        const b = JSON.parse(route.request().postData());
        route.continue({ postData: JSON.stringify({ ...b, ignore_eos: true }) });
    });
    // (12000 tokens take seconds even unsanitized: the click comes long before the end)
    await page.fill('#max-tokens', '12000');
    await page.fill('#input', 'Go on.');
    await page.press('#input', 'Enter');
    const a3 = page.locator('.msg.assistant').nth(2);
    await page.waitForFunction(() => {
        const m = document.querySelectorAll('.msg.assistant')[2];
        return m && m.querySelector('.content').textContent.length > 0;
    }, null, { polling: 20 });
    await page.click('#stop');
    await a3.and(page.locator('[data-done]')).waitFor();
    check(await a3.getAttribute('data-done') === 'error' && (await a3.locator('.error').textContent()) === 'stopped',
          'the stop button did not stop the answer');
    let busy = -1;
    for (let i = 0; i < 100 && busy !== 0; i++) {
        const s = await (await fetch(base + '/v1/stats', { headers: { Authorization: `Bearer ${env.KEY}` } })).json();
        busy = s.slots.busy;
        if (busy) await new Promise((r) => setTimeout(r, 50));
    }
    check(busy === 0, 'a slot is still busy after the stop button');

    check(errors.length === 0, `console errors: ${JSON.stringify(errors)}`);
    check(foreign.length === 0, `requests outside the server: ${JSON.stringify(foreign)}`);
} finally {
    await browser.close();
}
process.exit(failed);
