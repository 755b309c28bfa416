// The official OpenAI JavaScript client against `moekit serve` (driven by
// tests/cli/serve_openai.sh): models, chat and completions, streamed and
// not, usage, stop sequences, the client's typed errors for 404/400/401,
// and an aborted stream. Expected texts come from `moekit run --json`
// (files named by the environment), never from the server.
import fs from 'node:fs';
import OpenAI from 'openai';

const env = process.env;
const base = `http://127.0.0.1:${env.PORT}/v1`;
const client = new OpenAI({ baseURL: base, apiKey: env.KEY, maxRetries: 0, timeout: 30000 });
const wantChat = JSON.parse(fs.readFileSync(env.WANT_CHAT, 'utf8')).text;
const wantCompl = JSON.parse(fs.readFileSync(env.WANT_COMPL, 'utf8')).text;
let failed = 0;
function check(ok, what) {
    if (!ok) {
        console.error(`FAIL: ${what}`);
        failed = 1;
    }
}

const models = await client.models.list();
check(models.data.some((m) => m.id === 'tiny'), `models.list: ${JSON.stringify(models.data)}`);

const msgs = [{ role: 'user', content: 'Return the list.' }];
const r = await client.chat.completions.create({ model: 'tiny', messages: msgs, max_tokens: 20, temperature: 0 });
check(r.choices[0].message.content === wantChat, `chat: ${JSON.stringify(r.choices[0].message.content)} vs ${JSON.stringify(wantChat)}`);
check(r.choices[0].finish_reason === 'length' && r.usage.completion_tokens === 20 &&
      r.usage.total_tokens === r.usage.prompt_tokens + 20, `chat usage: ${JSON.stringify(r.usage)}`);

const stream = await client.chat.completions.create({
    model: 'tiny', messages: msgs, max_tokens: 20, temperature: 0, stream: true,
    stream_options: { include_usage: true } });
let text = '', usage = null, finish = null;
for await (const c of stream) {
    if (c.choices.length && c.choices[0].delta.content) text += c.choices[0].delta.content;
    if (c.choices.length && c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
    if (c.usage) usage = c.usage;
}
check(text === wantChat, `streamed chat: ${JSON.stringify(text)}`);
check(finish === 'length' && usage && usage.completion_tokens === 20, `streamed usage: ${JSON.stringify(usage)} ${finish}`);

const c = await client.completions.create({ model: 'tiny', prompt: 'Return the', max_tokens: 48, temperature: 0 });
check(c.choices[0].text === wantCompl, `completion: ${JSON.stringify(c.choices[0].text)}`);
const cs = await client.completions.create({ model: 'tiny', prompt: 'Return the', max_tokens: 48, temperature: 0,
                                             stop: [' list'] });
check(cs.choices[0].text === ' number of elements in the' && cs.choices[0].finish_reason === 'stop',
      `completion with stop: ${JSON.stringify(cs.choices[0])}`);

async function expectError(cls, status, fn, what) {
    try {
        await fn();
        check(false, `${what}: no error`);
    } catch (e) {
        check(e instanceof cls && e.status === status, `${what}: ${e.constructor.name} ${e.status} ${e.message}`);
    }
}
await expectError(OpenAI.NotFoundError, 404,
    () => client.chat.completions.create({ model: 'nope', messages: msgs }), 'unknown model');
await expectError(OpenAI.BadRequestError, 400,
    () => client.chat.completions.create({ model: 'tiny', messages: msgs, n: 2 }), 'n = 2');
await expectError(OpenAI.BadRequestError, 400,
    () => client.chat.completions.create({ model: 'tiny', messages: [] }), 'no messages');
const bad = new OpenAI({ baseURL: base, apiKey: 'wrong', maxRetries: 0 });
await expectError(OpenAI.AuthenticationError, 401, () => bad.models.list(), 'wrong key');

// an aborted stream: the client stops reading after two chunks
const ac = new AbortController();
const long = await client.completions.create({ model: 'tiny', prompt: 'x', max_tokens: 4000, temperature: 0,
                                               stream: true, ignore_eos: true }, { signal: ac.signal });
let n = 0;
try {
    for await (const ch of long) {
        if (++n === 2) ac.abort();
    }
} catch (e) {
    check(e.name === 'APIUserAbortError' || e.name === 'AbortError', `abort: ${e.name}`);
}
check(n >= 2, `aborted stream read ${n} chunks`);
process.exit(failed);
