// The official OpenAI JavaScript client's Responses API against `moekit
// serve --test-output` (driven by tests/cli/serve_responses.sh, template
// qwen3): each request may name the text the model generates
// (moekit_test_output) in Qwen3's markup; the server must answer in the
// Responses API's shapes and event sequence.
import OpenAI from 'openai';

const env = process.env;
const base = `http://127.0.0.1:${env.PORT}`;
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: env.KEY, maxRetries: 0, timeout: 30000 });
let failed = 0;
function check(ok, what) {
    if (!ok) {
        console.error(`FAIL: ${what}`);
        failed = 1;
    }
}
const J = JSON.stringify;
async function ntok(content) { // /tokenize: special tokens in the text are recognised
    const r = await fetch(`${base}/tokenize`, { method: 'POST', headers: { Authorization: `Bearer ${env.KEY}` },
                                                body: J({ content }) });
    return (await r.json()).tokens.length;
}

// a plain round trip: the text the model was made to write, usage against
// /tokenize of the prompt the released Qwen3 template renders
const r1 = await client.responses.create({ model: 'tiny', instructions: 'Be brief.', input: 'Hi',
                                           moekit_test_output: 'Hello there.' });
check(r1.object === 'response' && r1.id.startsWith('resp_') && r1.status === 'completed' && r1.model === 'tiny' &&
      typeof r1.created_at === 'number' && r1.error === null, `envelope ${J(r1)}`);
check(r1.output.length === 1 && r1.output[0].type === 'message' && r1.output[0].role === 'assistant' &&
      r1.output[0].status === 'completed' && r1.output[0].content.length === 1 &&
      r1.output[0].content[0].type === 'output_text', `output ${J(r1.output)}`);
check(r1.output_text === 'Hello there.', `output_text ${J(r1.output_text)}`);
const prompt = '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n';
const [wantIn, wantOut] = [await ntok(prompt), await ntok('Hello there.')];
check(r1.usage.input_tokens === wantIn && r1.usage.output_tokens === wantOut &&
      r1.usage.total_tokens === wantIn + wantOut, `usage ${J(r1.usage)} vs /tokenize ${wantIn} + ${wantOut}`);
check(r1.instructions === 'Be brief.' && r1.tool_choice === 'auto' && Array.isArray(r1.tools), `echo ${J(r1)}`);
// sampled (greedy): the same text chat completions gives for the same messages;
// max_output_tokens ends it as incomplete
const g = await client.responses.create({ model: 'tiny', input: [{ role: 'developer', content: 'Be brief.' },
                                                                 { role: 'user', content: [{ type: 'input_text', text: 'Return the list.' }] }],
                                          temperature: 0, max_output_tokens: 8 });
const c = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'system', content: 'Be brief.' },
                                                                           { role: 'user', content: 'Return the list.' }],
                                                 temperature: 0, max_tokens: 8 });
check(g.status === 'incomplete' && g.incomplete_details?.reason === 'max_output_tokens' && g.usage.output_tokens === 8,
      `incomplete ${J(g)}`);
check(g.output_text === c.choices[0].message.content && g.usage.input_tokens === c.usage.prompt_tokens,
      `greedy text ${J(g.output_text)} vs chat ${J(c.choices[0].message.content)}, ${g.usage.input_tokens} vs ${c.usage.prompt_tokens}`);

// a function call (with reasoning and text before it), then its output round trip
const tools = [{ type: 'function', name: 'get_weather', description: 'Weather of a city', strict: false,
                 parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } }];
const callText = '<think>\nThe user wants the weather.\n</think>\n\nChecking it.\n' +
                 '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>';
const ask = { model: 'tiny', input: [{ role: 'user', content: 'What is the weather in Paris?' }], tools };
const shape = (out) => out.map((i) => i.type === 'reasoning' ? ['reasoning', i.content.map((p) => p.text).join('')]
                                    : i.type === 'message' ? ['message', i.content.map((p) => p.text).join('')]
                                    : [i.type, i.name, JSON.parse(i.arguments)]);
const want = [['reasoning', 'The user wants the weather.'], ['message', 'Checking it.'],
              ['function_call', 'get_weather', { city: 'Paris' }]];
const f1 = await client.responses.create({ ...ask, moekit_test_output: callText });
check(J(shape(f1.output)) === J(want), `function call output ${J(f1.output)}`);
const fc = f1.output.find((i) => i.type === 'function_call');
check(fc && typeof fc.call_id === 'string' && fc.call_id.length > 0 && fc.id.startsWith('fc_') && fc.status === 'completed',
      `function_call item ${J(fc)}`);
check(new Set(f1.output.map((i) => i.id)).size === 3, `item ids ${J(f1.output.map((i) => i.id))}`);
const f2 = await client.responses.create({ ...ask, moekit_test_output: 'It is 21 degrees in Paris.',
    input: [...ask.input, ...f1.output, { type: 'function_call_output', call_id: fc.call_id, output: '21 degrees' }] });
check(f2.output_text === 'It is 21 degrees in Paris.' && f2.status === 'completed', `round trip ${J(f2)}`);
// the history renders as the same chat completions conversation does
const c2 = await client.chat.completions.create({ model: 'tiny', max_tokens: 1, tools: tools.map(({ type, strict, ...fn }) => ({ type, function: fn })),
    messages: [...ask.input, { role: 'assistant', content: 'Checking it.', reasoning_content: 'The user wants the weather.',
                               tool_calls: [{ id: fc.call_id, type: 'function', function: { name: 'get_weather', arguments: fc.arguments } }] },
               { role: 'tool', tool_call_id: fc.call_id, content: '21 degrees' }] });
check(f2.usage.input_tokens === c2.usage.prompt_tokens && f2.usage.input_tokens > f1.usage.input_tokens + 20,
      `round trip prompt ${f2.usage.input_tokens} vs chat ${c2.usage.prompt_tokens} (first ${f1.usage.input_tokens})`);
// the same slots and prompt cache as chat completions: the first turn's prompt
// is a prefix of the second's, served from its end-of-prompt snapshot
check(f2.usage.input_tokens_details.cached_tokens === f1.usage.input_tokens, `prompt cache ${J(f2.usage)} after ${J(f1.usage)}`);
const rendered = '<tool_response>\n21 degrees\n</tool_response>';
check(f2.usage.input_tokens >= f1.usage.input_tokens + (await ntok(rendered)), 'the tool output is in the prompt');

// tool_choice: a named function (Responses' flat shape) and "required" force the call
// (the server opens it in Qwen3's format; the model's text continues it)
const n1 = await client.responses.create({ ...ask, tool_choice: { type: 'function', name: 'get_weather' },
                                           moekit_test_output: '{"city": "Rome"}}\n</tool_call>' });
check(J(shape(n1.output)) === J([['function_call', 'get_weather', { city: 'Rome' }]]) &&
      J(n1.tool_choice) === J({ type: 'function', name: 'get_weather' }), `named tool_choice ${J(n1.output)}`);
const n2 = await client.responses.create({ ...ask, tool_choice: 'required', stream: false,
                                           moekit_test_output: 'get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' });
check(J(shape(n2.output)) === J([['function_call', 'get_weather', { city: 'Oslo' }]]), `required tool_choice ${J(n2.output)}`);
check(n2.usage.input_tokens === f1.usage.input_tokens + (await ntok('<tool_call>\n{"name": "')), `required: prompt ${n2.usage.input_tokens}`);

// streamed: the exact event sequence (runs of deltas as one), consecutive
// sequence_numbers, deltas that add up to the done texts, and the client's
// accumulator agreeing with response.completed
const events = [];
const st = client.responses.stream({ ...ask, moekit_test_output: callText });
st.on('event', (e) => events.push(structuredClone(e))); // the client's accumulator edits the events
const fin = await st.finalResponse();
const types = events.map((e) => e.type).filter((t, i, a) => !(t.endsWith('.delta') && a[i - 1] === t));
const item = (...t) => ['response.output_item.added', ...t, 'response.output_item.done'];
const part = (kind) => item('response.content_part.added', `response.${kind}.delta`, `response.${kind}.done`,
                            'response.content_part.done');
const wantTypes = ['response.created', 'response.in_progress', ...part('reasoning_text'), ...part('output_text'),
                   ...item('response.function_call_arguments.delta', 'response.function_call_arguments.done'),
                   'response.completed'];
check(J(types) === J(wantTypes), `event order ${J(types)}`);
check(events.every((e, i) => e.sequence_number === i), `sequence_numbers ${J(events.map((e) => e.sequence_number))}`);
check(events[0].response.status === 'in_progress' && events[0].response.output.length === 0, `created ${J(events[0])}`);
const sum = (t) => events.filter((e) => e.type === t).map((e) => e.delta).join('');
check(sum('response.reasoning_text.delta') === 'The user wants the weather.' &&
      events.find((e) => e.type === 'response.reasoning_text.done').text === 'The user wants the weather.', 'reasoning deltas');
check(sum('response.output_text.delta') === 'Checking it.' &&
      events.find((e) => e.type === 'response.output_text.done').text === 'Checking it.', 'text deltas');
check(J(JSON.parse(sum('response.function_call_arguments.delta'))) === J({ city: 'Paris' }) &&
      events.find((e) => e.type === 'response.function_call_arguments.done').arguments === fc.arguments, 'argument deltas');
for (const e of events.filter((e) => 'output_index' in e)) // indexes and ids name the item they belong to
    check(fin.output[e.output_index] && (e.item ? e.item.id : e.item_id) === fin.output[e.output_index].id, `item of ${J(e)}`);
const done = events.at(-1).response;
check(done.status === 'completed' && J(shape(done.output)) === J(want) && J(shape(fin.output)) === J(want),
      `completed ${J(done.output)}`);
check(J(done.usage) === J({ ...f1.usage, input_tokens_details: done.usage.input_tokens_details }), `streamed usage ${J(done.usage)} vs ${J(f1.usage)}`);
// the low-level stream (stream: true): a plain answer, then max_output_tokens
const ev2 = [];
for await (const e of await client.responses.create({ model: 'tiny', input: 'Hi', stream: true, moekit_test_output: 'one two three four',
                                                      max_output_tokens: 2 }))
    ev2.push(e);
check(ev2.at(-1).type === 'response.incomplete' && ev2.at(-1).response.incomplete_details.reason === 'max_output_tokens' &&
      ev2.at(-1).response.usage.output_tokens === 2 && ev2.every((e, i) => e.sequence_number === i), `incomplete stream ${J(ev2.map((e) => e.type))}`);
check(ev2.at(-1).response.output[0].content[0].text === ev2.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join(''),
      'incomplete stream text');

// reasoning effort "minimal" turns the template's thinking off (an empty think block in the prompt)
const m0 = await client.responses.create({ model: 'tiny', input: 'Hi', reasoning: { effort: 'high', summary: 'auto' }, moekit_test_output: 'x' });
const m1 = await client.responses.create({ model: 'tiny', input: 'Hi', reasoning: { effort: 'minimal' }, moekit_test_output: 'x' });
check(m1.usage.input_tokens === m0.usage.input_tokens + (await ntok('<think>\n\n</think>\n\n')), `effort minimal: ${m1.usage.input_tokens} vs ${m0.usage.input_tokens}`);

// refused, never ignored: a 400 naming the field
async function expect400(req, param) {
    try {
        await client.responses.create({ model: 'tiny', input: 'Hi', ...req });
        check(false, `${param}: accepted`);
    } catch (e) {
        check(e instanceof OpenAI.BadRequestError && e.param === param, `${param}: ${e} (param ${e.param})`);
    }
}
await expect400({ previous_response_id: r1.id }, 'previous_response_id');
await expect400({ frobnicate: true }, 'frobnicate');
await expect400({ tools: [{ type: 'web_search' }] }, 'tools[0]');
await expect400({ tools: [{ ...tools[0], strict: true }] }, 'tools[0].strict');
await expect400({ text: { format: { type: 'yaml' } } }, 'text.format'); // json formats: serve_jsonschema
await expect400({ input: [{ type: 'item_reference', id: 'x' }] }, 'input[0]');
await expect400({ input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'data:,' }] }] }, 'input[0].content[0]');
await expect400({ background: true }, 'background');
await expect400({ tools, tool_choice: { type: 'function', name: 'get_news' } }, 'tool_choice.name');
await expect400({ tools, tool_choice: { type: 'file_search' } }, 'tool_choice');
await expect400({ truncation: 'auto' }, 'truncation');
await expect400({ reasoning: { effort: 'extreme' } }, 'reasoning.effort');
await expect400({ max_output_tokens: 0 }, 'max_output_tokens');
await expect400({ tools: [{ type: 'function', parameters: {} }] }, 'tools[0].name');
await expect400({ input: [{ type: 'function_call', call_id: 'c', name: 'f', arguments: '[1]' }] }, 'input[0].arguments');
await expect400({ metadata: 'x' }, 'metadata');
await expect400({ temperature: 3 }, 'temperature');
process.exit(failed);
