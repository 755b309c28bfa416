// The official Anthropic JavaScript client against `moekit serve
// --test-output` (driven by tests/cli/serve_anthropic.sh, template qwen3):
// each request names the text the model generates (moekit_test_output) in
// Qwen3's markup; the server must answer in Anthropic's shapes.
import Anthropic from '@anthropic-ai/sdk';

const env = process.env;
const client = new Anthropic({ baseURL: `http://127.0.0.1:${env.PORT}`, apiKey: env.KEY, maxRetries: 0, timeout: 30000 });
let failed = 0;
function check(ok, what) {
    if (!ok) {
        console.error(`FAIL: ${what}`);
        failed = 1;
    }
}
const J = JSON.stringify;
const tools = [{ name: 'get_weather', description: 'Weather of a city',
                 input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } }];
const base = { model: 'claude-any-name', max_tokens: 300, temperature: 0, system: 'Be brief.',
               messages: [{ role: 'user', content: 'What is the weather in Paris?' }] };
const callText = '<think>\nThe user wants the weather.\n</think>\n\nChecking it.\n' +
                 '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>';
const shape = (content) => content.map((b) => b.type === 'thinking' ? ['thinking', b.thinking]
                                          : b.type === 'text' ? ['text', b.text] : ['tool_use', b.name, b.input]);
const wantBlocks = [['thinking', 'The user wants the weather.'], ['text', 'Checking it.'], ['tool_use', 'get_weather', { city: 'Paris' }]];

// non-streamed: thinking, text and tool_use blocks, stop_reason tool_use
const m = await client.messages.create({ ...base, tools, moekit_test_output: callText });
check(m.type === 'message' && m.role === 'assistant' && m.id.startsWith('msg_'), `envelope ${J(m)}`);
check(J(shape(m.content)) === J(wantBlocks), `content ${J(m.content)}`);
check(m.stop_reason === 'tool_use' && m.stop_sequence === null, `stop_reason ${m.stop_reason}`);
const tu = m.content.find((b) => b.type === 'tool_use');
check(tu && typeof tu.id === 'string' && tu.id.length > 0, `tool_use id ${J(tu)}`);
check(m.usage.input_tokens + m.usage.cache_read_input_tokens > 20 && m.usage.output_tokens > 10, `usage ${J(m.usage)}`);

// streamed: the event order, and the client's accumulator rebuilds the same message
const events = [];
const st = client.messages.stream({ ...base, tools, moekit_test_output: callText });
st.on('streamEvent', (e) => events.push(e));
const fin = await st.finalMessage();
check(J(shape(fin.content)) === J(wantBlocks), `streamed content ${J(fin.content)}`);
check(fin.stop_reason === 'tool_use', `streamed stop_reason ${fin.stop_reason}`);
const types = events.map((e) => e.type);
check(types[0] === 'message_start' && types.at(-1) === 'message_stop' && types.at(-2) === 'message_delta',
      `event order ${J(types)}`);
let open = -1, next = 0;
for (const e of events) { // blocks open in index order, deltas only inside an open block
    if (e.type === 'content_block_start') { check(open === -1 && e.index === next, `start ${J(e)} while ${open}`); open = e.index; }
    if (e.type === 'content_block_delta') check(e.index === open, `delta outside its block ${J(e)}`);
    if (e.type === 'content_block_stop') { check(e.index === open, `stop ${J(e)}`); open = -1; next++; }
}
check(open === -1 && next === 3, `blocks: ${next}, left open ${open}`);
check(events.some((e) => e.type === 'content_block_delta' && e.delta.type === 'thinking_delta') &&
      events.some((e) => e.type === 'content_block_delta' && e.delta.type === 'input_json_delta'), `delta kinds ${J(types)}`);
for (const e of events)
    if (e.type === 'content_block_delta' && e.delta.type === 'text_delta')
        check(!/[<|]/.test(e.delta.text), `markup in a text delta ${J(e.delta.text)}`);

// the tool result round trip: the answer's blocks and a tool_result go back
const m2 = await client.messages.create({ ...base, tools, moekit_test_output: 'It is 21 degrees in Paris.',
    messages: [...base.messages, { role: 'assistant', content: m.content },
               { role: 'user', content: [{ type: 'tool_result', tool_use_id: tu.id, content: '21 degrees' }] }] });
check(J(shape(m2.content)) === J([['text', 'It is 21 degrees in Paris.']]) && m2.stop_reason === 'end_turn',
      `round trip ${J(m2)}`);
const in1 = m.usage.input_tokens + m.usage.cache_read_input_tokens, in2 = m2.usage.input_tokens + m2.usage.cache_read_input_tokens;
check(in2 > in1 + 10, `round trip prompt ${in2} vs ${in1}`);

// stop reasons: a stop sequence, max_tokens
const s1 = await client.messages.create({ ...base, stop_sequences: ['STOP'], moekit_test_output: 'Hello there STOP and more' });
check(s1.stop_reason === 'stop_sequence' && s1.stop_sequence === 'STOP' && s1.content[0].text === 'Hello there ',
      `stop sequence ${J(s1)}`);
const s2 = await client.messages.create({ ...base, max_tokens: 2, moekit_test_output: 'one two three four five six' });
check(s2.stop_reason === 'max_tokens' && s2.usage.output_tokens === 2, `max_tokens ${J(s2)}`);

// tool_choice tool: the server opens the call to it (Qwen3's rendering, after
// the generation prompt); the model's text continues it
const ft = await client.messages.create({ ...base, tools, tool_choice: { type: 'tool', name: 'get_weather' },
                                          moekit_test_output: '{"city": "Paris"}}\n</tool_call>' });
check(J(shape(ft.content)) === J([['tool_use', 'get_weather', { city: 'Paris' }]]) && ft.stop_reason === 'tool_use',
      `tool_choice tool ${J(ft)}`);

// count_tokens: the prompt the same request is answered from
const ct = await client.messages.countTokens({ model: 'x', system: base.system, messages: base.messages, tools });
check(ct.input_tokens === in1, `count_tokens ${ct.input_tokens} vs ${in1}`);
const off = await client.messages.countTokens({ model: 'x', system: base.system, messages: base.messages, tools,
                                                thinking: { type: 'disabled' } });
check(off.input_tokens > ct.input_tokens, `thinking disabled: ${off.input_tokens} vs ${ct.input_tokens}`);

// refused, never ignored
async function expect400(req, what) {
    try {
        await client.messages.create(req);
        check(false, `${what}: accepted`);
    } catch (e) {
        check(e instanceof Anthropic.BadRequestError && e.error?.type === 'error', `${what}: ${e}`);
    }
}
const { max_tokens, ...noMax } = base;
await expect400(noMax, 'no max_tokens');
await expect400({ ...base, tools, tool_choice: { type: 'tool', name: 'get_news' } }, 'tool_choice tool: not one of the tools');
await expect400({ ...base, messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'AA==' } }] }] }, 'image');
await expect400({ ...base, tools: [{ type: 'web_search_20250305', name: 'web_search' }] }, 'server tool');
try {
    await new Anthropic({ baseURL: `http://127.0.0.1:${env.PORT}`, apiKey: 'wrong', maxRetries: 0 }).messages.create(base);
    check(false, 'wrong key accepted');
} catch (e) {
    check(e instanceof Anthropic.AuthenticationError, `wrong key: ${e}`);
}
process.exit(failed);
