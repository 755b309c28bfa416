// The official OpenAI JavaScript client against `moekit serve --test-output`
// (driven by tests/cli/serve_tools.sh, once per chat template in TEMPLATE):
// each request names the text the model generates (moekit_test_output),
// written in the family's own markup; the server must hand it back split
// into reasoning_content, content and tool_calls, the same whether streamed
// or not, with the client's own stream accumulator agreeing and no markup
// in any content delta.
import OpenAI from 'openai';

const env = process.env;
const client = new OpenAI({ baseURL: `http://127.0.0.1:${env.PORT}/v1`, apiKey: 'none', maxRetries: 0, timeout: 30000 });
const tpl = env.TEMPLATE;
let failed = 0;
function check(ok, what) {
    if (!ok) {
        console.error(`FAIL (${tpl}): ${what}`);
        failed = 1;
    }
}
const J = JSON.stringify;
const user = [{ role: 'user', content: 'What is the weather in Paris?' }];
const tools = [
    { type: 'function', function: { name: 'get_weather', description: 'Weather of a city',
      parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } },
    { type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: {} } } },
];
const base = { model: 'tiny', messages: user, temperature: 0, max_tokens: 400 };

// Non-streamed and streamed (raw chunks, then the client's accumulator):
// the same reasoning, content, calls and finish reason.
async function both(out, extra, want) {
    const req = { ...base, ...extra, moekit_test_output: out };
    const r = await client.chat.completions.create(req);
    const m = r.choices[0].message;
    check((m.reasoning_content ?? '') === want.reasoning, `reasoning ${J(m.reasoning_content)} vs ${J(want.reasoning)}`);
    check(m.content === want.content, `content ${J(m.content)} vs ${J(want.content)}`);
    const calls = (m.tool_calls ?? []).map((c) => [c.function.name, JSON.parse(c.function.arguments)]);
    check(J(calls) === J(want.calls ?? []), `tool_calls ${J(m.tool_calls)} vs ${J(want.calls ?? [])}`);
    check(r.choices[0].finish_reason === (want.calls ? 'tool_calls' : 'stop'), `finish ${r.choices[0].finish_reason}`);
    for (const c of m.tool_calls ?? [])
        check(c.type === 'function' && typeof c.id === 'string' && c.id.length > 0, `call ${J(c)}`);

    const s = await client.chat.completions.create({ ...req, stream: true });
    let reasoning = '', content = '', nreason = 0, finish = null;
    const scalls = [];
    for await (const ch of s) {
        if (!ch.choices.length) continue;
        const d = ch.choices[0].delta;
        if (d.reasoning_content) { reasoning += d.reasoning_content; nreason++; }
        if (d.content) {
            content += d.content;
            // what was streamed is always the start of the final answer: markup
            // held back until parsed never shows, not even a piece of a tag
            check((want.content ?? '').startsWith(content), `content so far ${J(content)} is not the start of ${J(want.content)}`);
            check(/[<|]/.test(want.content ?? '') || !/[<|]/.test(d.content), `markup in a content delta: ${J(d.content)}`);
        }
        if (d.reasoning_content)
            check(want.reasoning.startsWith(reasoning), `reasoning so far ${J(reasoning)} is not the start of ${J(want.reasoning)}`);
        for (const c of d.tool_calls ?? []) scalls[c.index] = [c.function.name, JSON.parse(c.function.arguments)];
        if (ch.choices[0].finish_reason) finish = ch.choices[0].finish_reason;
    }
    check(reasoning === want.reasoning, `streamed reasoning ${J(reasoning)}`);
    // (how many deltas carry it depends on how fast the stream is read: not checked)
    check(!want.reasoning || nreason >= 1, `no reasoning_content delta`);
    check(content === (want.content ?? ''), `streamed content ${J(content)}`);
    check(J(scalls) === J(want.calls ?? []), `streamed tool_calls ${J(scalls)}`);
    check(finish === (want.calls ? 'tool_calls' : 'stop'), `streamed finish ${finish}`);

    if (want.calls) { // the client's own accumulation of tool_calls deltas
        const st = client.chat.completions.stream({ ...req, stream: true });
        const fin = await st.finalChatCompletion();
        const fm = fin.choices[0].message;
        const fcalls = (fm.tool_calls ?? []).map((c) => [c.function.name, JSON.parse(c.function.arguments)]);
        check(J(fcalls) === J(want.calls), `client stream helper: ${J(fm.tool_calls)}`);
    }
    return r;
}

// tool_choice "required" / a named function: the server appends the
// family's call opening (its template's rendering of a call, the name in it
// when named) to the prompt; the model's text continues the call and the
// parser reads the opening before it. The prompt grows by the opening's
// tokens (/tokenize), and the call comes back parsed, streamed or not.
async function ntok(content) {
    const r = await fetch(`http://127.0.0.1:${env.PORT}/tokenize`, { method: 'POST', body: J({ content }) });
    return (await r.json()).tokens.length;
}
async function forced(tool_choice, opening, out, calls) {
    const auto = await client.chat.completions.create({ ...base, tools, max_tokens: 1 });
    const r = await both(out, { tools, tool_choice }, { reasoning: '', content: null, calls });
    check(r.usage.prompt_tokens === auto.usage.prompt_tokens + (await ntok(opening)),
          `tool_choice ${J(tool_choice)}: prompt ${r.usage.prompt_tokens} vs ${auto.usage.prompt_tokens} + ${J(opening)}`);
}
async function expect400(extra, param) {
    try {
        await client.chat.completions.create({ ...base, ...extra });
        check(false, `${J(extra)} accepted`);
    } catch (e) {
        check(e instanceof OpenAI.BadRequestError && e.param === param, `${J(extra)}: ${e} (param ${e.param})`);
    }
}
const named = (name) => ({ type: 'function', function: { name } });

if (tpl === 'qwen3') {
    await both('<think>\nPlan the call: Paris.\n</think>\n\nChecking the weather.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
               { tools }, { reasoning: 'Plan the call: Paris.', content: 'Checking the weather.', calls: [['get_weather', { city: 'Paris' }]] });
    // parallel calls, no text around them: content is null
    await both('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
               { tools }, { reasoning: '', content: null, calls: [['get_weather', { city: 'Paris' }], ['get_time', {}]] });
    // parallel_tool_calls false: the first call only
    await both('<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>',
               { tools, parallel_tool_calls: false }, { reasoning: '', content: null, calls: [['get_time', {}]] });
    // without tools the markup is the answer; tool_choice none: neither rendered nor parsed
    const raw = 'See <tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>';
    await both(raw, {}, { reasoning: '', content: raw });
    await both(raw, { tools, tool_choice: 'none' }, { reasoning: '', content: raw });
    // the tool result round trip: the assistant's calls and the results render
    const first = await both('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
                             { tools }, { reasoning: '', content: null, calls: [['get_weather', { city: 'Paris' }]] });
    const call = first.choices[0].message.tool_calls[0];
    const msgs = [...user, first.choices[0].message, { role: 'tool', tool_call_id: call.id, content: '{"temp": 21}' }];
    const second = await both('It is 21 degrees in Paris.', { tools, messages: msgs },
                              { reasoning: '', content: 'It is 21 degrees in Paris.' });
    check(second.usage.prompt_tokens > first.usage.prompt_tokens + 10, `round trip prompt ${second.usage.prompt_tokens} vs ${first.usage.prompt_tokens}`);
    // enable_thinking reaches the template: its empty think block lengthens the prompt
    const on = await client.chat.completions.create({ ...base, max_tokens: 1 });
    const off = await client.chat.completions.create({ ...base, max_tokens: 1, chat_template_kwargs: { enable_thinking: false } });
    check(off.usage.prompt_tokens > on.usage.prompt_tokens, `enable_thinking false: prompt ${off.usage.prompt_tokens} vs ${on.usage.prompt_tokens}`);
    await forced('required', '<tool_call>\n{"name": "', 'get_time", "arguments": {}}\n</tool_call>', [['get_time', {}]]);
    await forced(named('get_weather'), '<tool_call>\n{"name": "get_weather", "arguments": ',
                 '{"city": "Paris"}}\n</tool_call>', [['get_weather', { city: 'Paris' }]]);
    await expect400({ tools, tool_choice: named('get_news') }, 'tool_choice.function.name');
    await expect400({ tool_choice: 'required' }, 'tool_choice');
} else if (tpl === 'qwen3-think') { // the generation prompt opened <think>
    await both('Reasoning first.\n</think>\n\nThe answer.', {}, { reasoning: 'Reasoning first.', content: 'The answer.' });
    await both('The answer, no thinking.', { chat_template_kwargs: { enable_thinking: false } },
               { reasoning: '', content: 'The answer, no thinking.' });
    await both('Think about the time first.\n</think>\n\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>', { tools },
               { reasoning: 'Think about the time first.', content: null, calls: [['get_time', {}]] });
} else if (tpl === 'qwen3.5') { // Qwen3-Coder's XML calls, values typed by the tool's schema
    const first = await both('Which city?\n</think>\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=get_time>\n</function>\n</tool_call>',
                             { tools }, { reasoning: 'Which city?', content: null, calls: [['get_weather', { city: 'New York' }], ['get_time', {}]] });
    const [c1, c2] = first.choices[0].message.tool_calls;
    const msgs = [...user, first.choices[0].message, { role: 'tool', tool_call_id: c1.id, content: '21 degrees' },
                  { role: 'tool', tool_call_id: c2.id, content: 'noon' }];
    const second = await both('Got both.\n</think>\n\nIt is 21 degrees at noon.', { tools, messages: msgs },
                              { reasoning: 'Got both.', content: 'It is 21 degrees at noon.' });
    check(second.usage.prompt_tokens > first.usage.prompt_tokens + 10, `qwen3.5 round trip prompt ${second.usage.prompt_tokens} vs ${first.usage.prompt_tokens}`);
    // the prompt opened <think>: a forced call closes it first
    await forced(named('get_weather'), '</think>\n\n<tool_call>\n<function=get_weather>\n',
                 '<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>', [['get_weather', { city: 'Paris' }]]);
} else if (tpl === 'glm4') {
    await both('\n<think>GLM thinks it over.</think>\nGLM answers.', {}, { reasoning: 'GLM thinks it over.', content: 'GLM answers.' });
    const first = await both('\n<think>The weather tool.</think>\nChecking.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>',
                             { tools }, { reasoning: 'The weather tool.', content: 'Checking.', calls: [['get_weather', { city: 'Paris' }]] });
    const call = first.choices[0].message.tool_calls[0];
    const msgs = [...user, first.choices[0].message, { role: 'tool', tool_call_id: call.id, content: '21 degrees' }];
    const second = await both('\n<think></think>\nIt is 21 degrees.', { tools, messages: msgs }, { reasoning: '', content: 'It is 21 degrees.' });
    check(second.usage.prompt_tokens > first.usage.prompt_tokens + 10, `glm4 round trip prompt ${second.usage.prompt_tokens} vs ${first.usage.prompt_tokens}`);
    await forced('required', '<tool_call>', 'get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>',
                 [['get_weather', { city: 'Paris' }]]);
} else if (tpl === 'glm4.7') { // the prompt opened <think>; calls in the compact format
    const first = await both('The weather tool.</think><tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call>',
                             { tools }, { reasoning: 'The weather tool.', content: null, calls: [['get_weather', { city: 'Paris' }]] });
    const call = first.choices[0].message.tool_calls[0];
    const msgs = [...user, first.choices[0].message, { role: 'tool', tool_call_id: call.id, content: '21 degrees' }];
    const second = await both('Got it.</think>It is 21 degrees.', { tools, messages: msgs },
                              { reasoning: 'Got it.', content: 'It is 21 degrees.' });
    check(second.usage.prompt_tokens > first.usage.prompt_tokens + 10, `glm4.7 round trip prompt ${second.usage.prompt_tokens} vs ${first.usage.prompt_tokens}`);
    // the open think block closed as the template closes an empty one
    await forced('required', '</think><tool_call>', 'get_time</tool_call>', [['get_time', {}]]);
    // nothing ends the name in the compact format: a named function is refused
    await expect400({ tools, tool_choice: named('get_time') }, 'tool_choice');
} else if (tpl === 'minimax-m2') {
    await both('MiniMax thinks it over.\n</think>\n\nMiniMax answers.', {}, { reasoning: 'MiniMax thinks it over.', content: 'MiniMax answers.' });
    const first = await both('Two tools.\n</think>\n\n<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris</parameter>\n</invoke>\n<invoke name="get_time">\n</invoke>\n</minimax:tool_call>',
                             { tools }, { reasoning: 'Two tools.', content: null, calls: [['get_weather', { city: 'Paris' }], ['get_time', {}]] });
    const [c1, c2] = first.choices[0].message.tool_calls;
    const msgs = [...user, first.choices[0].message, { role: 'tool', tool_call_id: c1.id, content: '21 degrees' },
                  { role: 'tool', tool_call_id: c2.id, content: 'noon' }];
    const second = await both('Done.\n</think>\n\nIt is 21 degrees at noon.', { tools, messages: msgs },
                              { reasoning: 'Done.', content: 'It is 21 degrees at noon.' });
    check(second.usage.prompt_tokens > first.usage.prompt_tokens + 10, `minimax round trip prompt ${second.usage.prompt_tokens} vs ${first.usage.prompt_tokens}`);
    await forced(named('get_time'), '</think>\n\n<minimax:tool_call>\n<invoke name="get_time">\n',
                 '</invoke>\n</minimax:tool_call>', [['get_time', {}]]);
} else if (tpl === 'kimi-k2') {
    const first = await both('Let me look.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|>',
                             { tools }, { reasoning: '', content: 'Let me look.', calls: [['get_weather', { city: 'Paris' }]] });
    const call = first.choices[0].message.tool_calls[0];
    const msgs = [...user, first.choices[0].message, { role: 'tool', tool_call_id: call.id, content: '21 degrees' }];
    const second = await both('It is 21 degrees.', { tools, messages: msgs }, { reasoning: '', content: 'It is 21 degrees.' });
    check(second.usage.prompt_tokens > first.usage.prompt_tokens + 10, `kimi round trip prompt ${second.usage.prompt_tokens} vs ${first.usage.prompt_tokens}`);
    // kimi numbers calls across the conversation: forcing one is refused, never ignored
    await expect400({ tools, tool_choice: 'required' }, 'tool_choice');
} else if (tpl === 'deepseek3.2') { // DSML calls, values typed by string="true|false"
    const first = await both('Checking.\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="get_weather">\n<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n</｜DSML｜invoke>\n<｜DSML｜invoke name="get_time">\n</｜DSML｜invoke>\n</｜DSML｜function_calls>',
                             { tools }, { reasoning: '', content: 'Checking.', calls: [['get_weather', { city: 'Paris' }], ['get_time', {}]] });
    const [c1, c2] = first.choices[0].message.tool_calls;
    const msgs = [...user, first.choices[0].message, { role: 'tool', tool_call_id: c1.id, content: '21 degrees' },
                  { role: 'tool', tool_call_id: c2.id, content: 'noon' }];
    const second = await both('It is 21 degrees at noon.', { tools, messages: msgs }, { reasoning: '', content: 'It is 21 degrees at noon.' });
    check(second.usage.prompt_tokens > first.usage.prompt_tokens + 10, `deepseek3.2 round trip prompt ${second.usage.prompt_tokens} vs ${first.usage.prompt_tokens}`);
    const open = '\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="';
    await forced('required', open, 'get_time">\n</｜DSML｜invoke>\n</｜DSML｜function_calls>', [['get_time', {}]]);
    await forced(named('get_weather'), open + 'get_weather">\n',
                 '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls>',
                 [['get_weather', { city: 'Paris' }]]);
} else if (tpl === 'harmony') {
    await both('<|channel|>analysis<|message|>Harmony thinks it over.<|end|><|start|>assistant<|channel|>final<|message|>Harmony answers.',
               {}, { reasoning: 'Harmony thinks it over.', content: 'Harmony answers.' });
    // a call on the commentary channel; sent back, its reasoning goes on the
    // analysis channel and the result answers functions.get_weather
    const first = await both('<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>',
                             { tools }, { reasoning: 'Need the weather.', content: null, calls: [['get_weather', { city: 'Paris' }]] });
    const call = first.choices[0].message.tool_calls[0];
    const msgs = [...user, first.choices[0].message, { role: 'tool', tool_call_id: call.id, content: '21 degrees' }];
    const second = await both('<|channel|>final<|message|>It is 21 degrees.', { tools, messages: msgs },
                              { reasoning: '', content: 'It is 21 degrees.' });
    check(second.usage.prompt_tokens > first.usage.prompt_tokens + 10, `harmony round trip prompt ${second.usage.prompt_tokens} vs ${first.usage.prompt_tokens}`);
    try { // the template renders one call per assistant message: two are refused, never dropped
        const two = { ...first.choices[0].message, tool_calls: [call, { ...call, id: 'call_b' }] };
        await client.chat.completions.create({ ...base, tools, messages: [...user, two] });
        check(false, 'two calls in one harmony assistant message accepted');
    } catch (e) {
        check(e instanceof OpenAI.BadRequestError && /renders only the first/.test(e.message), `harmony two calls: ${e}`);
    }
    // forced: the call's opening after '<|start|>assistant', as the template renders a call
    await forced('required', ' to=functions.', 'get_time<|channel|>commentary json<|message|>{}<|call|>', [['get_time', {}]]);
    await forced(named('get_weather'), ' to=functions.get_weather<|channel|>commentary json<|message|>',
                 '{"city": "Paris"}<|call|>', [['get_weather', { city: 'Paris' }]]);
} else {
    check(false, `unknown TEMPLATE ${tpl}`);
}
process.exit(failed);
