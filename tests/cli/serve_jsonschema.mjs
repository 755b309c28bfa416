// response_format through the official OpenAI JavaScript client against
// `moekit serve` with the tiny model (driven by tests/cli/serve_jsonschema.sh):
// for each supported schema feature, N (env, default 100) generations sampled at temperature 1
// with different seeds must all finish with "stop" (the grammar steers towards
// closing within max_tokens) and their content must parse (JSON.parse) and
// validate against the schema with the small validator below, written here
// from the JSON Schema rules and independent of the server's compiler.
// Unsupported keywords and combinations must give 400 naming the field, the
// keyword and its path.
import OpenAI from 'openai';

const env = process.env;
const client = new OpenAI({ baseURL: `http://127.0.0.1:${env.PORT}/v1`, apiKey: 'none', maxRetries: 0, timeout: 60000 });
const N = Number(env.N || 100);
let failed = 0;
function check(ok, what) {
    if (!ok) {
        console.error(`FAIL: ${what}`);
        failed = 1;
    }
}

// ---- an independent validator for the subset the server supports -------------
function deepEqual(a, b) {
    return JSON.stringify(a) === JSON.stringify(b) ||
        (typeof a === 'object' && typeof b === 'object' && a && b && !Array.isArray(a) && !Array.isArray(b) &&
         Object.keys(a).length === Object.keys(b).length && Object.keys(a).every((k) => deepEqual(a[k], b[k])));
}
function typeOk(v, t) {
    switch (t) {
    case 'object': return typeof v === 'object' && v !== null && !Array.isArray(v);
    case 'array': return Array.isArray(v);
    case 'string': return typeof v === 'string';
    case 'number': return typeof v === 'number' && Number.isFinite(v);
    case 'integer': return typeof v === 'number' && Number.isInteger(v);
    case 'boolean': return typeof v === 'boolean';
    case 'null': return v === null;
    }
    throw new Error(`validator: unknown type ${t}`);
}
// Errors of v against schema s (root: for $ref); [] when valid.
function validate(v, s, root = s, path = '$') {
    if (s === true || Object.keys(s).filter((k) => !['description', 'title', '$defs'].includes(k)).length === 0) return [];
    if (s.$ref) {
        const t = s.$ref === '#' ? root : root.$defs[s.$ref.replace('#/$defs/', '')];
        return validate(v, t, root, path);
    }
    const errs = [];
    if (s.anyOf && !s.anyOf.some((a) => validate(v, a, root, path).length === 0)) errs.push(`${path}: no anyOf alternative`);
    if (s.type) {
        const ts = Array.isArray(s.type) ? s.type : [s.type];
        if (!ts.some((t) => typeOk(v, t))) errs.push(`${path}: not of type ${ts}`);
    }
    if (s.enum && !s.enum.some((e) => deepEqual(e, v))) errs.push(`${path}: not in enum`);
    if ('const' in s && !deepEqual(s.const, v)) errs.push(`${path}: not the const`);
    if (typeOk(v, 'object')) {
        for (const r of s.required || []) if (!(r in v)) errs.push(`${path}: misses ${r}`);
        for (const [k, x] of Object.entries(v)) {
            if (s.properties && k in s.properties) errs.push(...validate(x, s.properties[k], root, `${path}.${k}`));
            else if (s.additionalProperties === false) errs.push(`${path}: extra key ${k}`);
        }
    }
    if (typeOk(v, 'array')) {
        if (s.minItems !== undefined && v.length < s.minItems) errs.push(`${path}: fewer than ${s.minItems} items`);
        if (s.maxItems !== undefined && v.length > s.maxItems) errs.push(`${path}: more than ${s.maxItems} items`);
        if (s.items) v.forEach((x, i) => errs.push(...validate(x, s.items, root, `${path}[${i}]`)));
    }
    return errs;
}
// The validator itself must reject what it should (else it checks nothing).
const person = { type: 'object', properties: { name: { type: 'string' }, age: { type: 'integer' } },
                 required: ['name', 'age'], additionalProperties: false };
check(validate({ name: 'a', age: 1 }, person).length === 0, 'validator: a valid person');
check(validate({ name: 'a', age: 1.5 }, person).length > 0, 'validator: age 1.5');
check(validate({ name: 'a' }, person).length > 0, 'validator: no age');
check(validate({ name: 'a', age: 1, x: 0 }, person).length > 0, 'validator: extra key');
check(validate([1, 2, 3], { type: 'array', maxItems: 2 }).length > 0, 'validator: maxItems');
check(validate('c', { enum: ['a', 'b'] }).length > 0, 'validator: enum');

// ---- the features: each sampled N times ------------------------------------
const features = [
    ['json_object', { type: 'json_object' }, { type: 'object' }, 24],
    ['object strict: string, integer, number, boolean, null', null, {
        type: 'object',
        properties: { s: { type: 'string' }, i: { type: 'integer' }, n: { type: 'number' }, b: { type: 'boolean' },
                      z: { type: 'null' } },
        required: ['s', 'i', 'n', 'b', 'z'], additionalProperties: false }, 48], // shortest: 39 bytes
    ['enum and const', null, {
        type: 'object', properties: { color: { enum: ['red', 'green', 'blue', 7, null] }, kind: { const: 'fixed' } },
        required: ['color', 'kind'], additionalProperties: false }, 32, 2], // 5 instances in all
    ['anyOf and nullable (type arrays)', null, {
        type: 'object',
        properties: { v: { anyOf: [{ type: 'integer' }, { type: 'string' }, { type: 'array', items: { type: 'boolean' }, maxItems: 2 }] },
                      maybe: { type: ['string', 'null'] } },
        required: ['v', 'maybe'], additionalProperties: false }, 32],
    ['array items, minItems, maxItems', null, {
        type: 'object', properties: { xs: { type: 'array', items: { type: 'integer' }, minItems: 1, maxItems: 3 } },
        required: ['xs'], additionalProperties: false }, 32],
    ['nested objects', null, {
        type: 'object',
        properties: { p: { type: 'object', properties: { q: { type: 'boolean' } }, required: ['q'], additionalProperties: false } },
        required: ['p'], additionalProperties: false }, 24, 2], // 2 instances in all
    ['$ref to $defs, recursive', null, {
        $defs: { node: { type: 'object', properties: { v: { type: 'integer' }, kids: { type: 'array', items: { $ref: '#/$defs/node' }, maxItems: 2 } },
                         required: ['v', 'kids'], additionalProperties: false } },
        $ref: '#/$defs/node' }, 40],
    ['optional properties (not strict)', 'loose', {
        type: 'object', properties: { a: { type: 'integer' }, b: { type: 'boolean' }, c: { type: 'string' } }, required: ['b'] }, 24],
];

async function one(fmt, schema, maxTokens, seed) {
    const r = await client.chat.completions.create({
        model: 'tiny', messages: [{ role: 'user', content: 'Answer in JSON.' }], temperature: 1, seed,
        max_tokens: maxTokens, response_format: fmt });
    return r.choices[0];
}

async function pool(n, width, fn) {
    let next = 0;
    const out = new Array(n);
    await Promise.all(Array.from({ length: width }, async () => {
        while (next < n) {
            const i = next++;
            out[i] = await fn(i);
        }
    }));
    return out;
}

// Each: name, format (null: json_schema strict; 'loose': not strict), schema,
// max_tokens (at least the shortest instance in bytes + 1: the budget the
// server guarantees to close in), and how many distinct outputs of N show
// sampling (a quarter of N unless the schema has fewer instances: those are
// sampled 100 times even when N is smaller, since 20 draws of a schema with
// 2-5 instances may well show only one of them).
for (const [name, fmt0, schema, maxTokens, few] of features) {
    const n = few ? Math.max(N, 100) : N, minDistinct = few ?? n / 4;
    const strict = fmt0 !== 'loose';
    const fmt = fmt0 && fmt0 !== 'loose' ? fmt0 : { type: 'json_schema', json_schema: { name: 'f', schema, strict } };
    const res = await pool(n, 4, (i) => one(fmt, schema, maxTokens, 1000 + i));
    let bad = 0, distinct = new Set();
    for (const c of res) {
        const text = c.message.content;
        distinct.add(text);
        let v, errs;
        try {
            v = JSON.parse(text);
            errs = validate(v, schema);
        } catch (e) {
            errs = [`does not parse: ${e.message}`];
        }
        if (c.finish_reason !== 'stop') errs.push(`finish_reason ${c.finish_reason}`);
        if (errs.length && bad++ < 3) check(false, `${name}: ${JSON.stringify(text)}: ${errs.join('; ')}`);
    }
    check(bad === 0, `${name}: ${bad} of ${n} generations invalid`);
    // sampled, not one forced text: the seeds must give different outputs
    check(distinct.size >= minDistinct, `${name}: only ${distinct.size} distinct outputs of ${n}`);
    console.log(`${name}: ${n - bad}/${n} valid, ${distinct.size} distinct`);
}

// streamed: the deltas concatenate to a valid instance
{
    const stream = await client.chat.completions.create({
        model: 'tiny', messages: [{ role: 'user', content: 'Stream JSON.' }], temperature: 1, seed: 5, max_tokens: 32,
        stream: true, response_format: { type: 'json_schema', json_schema: { name: 'p', schema: person, strict: true } } });
    let text = '', finish = null;
    for await (const c of stream) {
        if (c.choices.length && c.choices[0].delta.content) text += c.choices[0].delta.content;
        if (c.choices.length && c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
    }
    let errs;
    try { errs = validate(JSON.parse(text), person); } catch (e) { errs = [e.message]; }
    check(errs.length === 0 && finish === 'stop', `stream: ${JSON.stringify(text)} ${finish}: ${errs}`);
}

// /v1/completions takes response_format too (raw text, no template)
{
    const res = await pool(20, 4, (i) => client.completions.create({
        model: 'tiny', prompt: 'JSON:', temperature: 1, seed: 77 + i, max_tokens: 24, response_format: { type: 'json_object' } }));
    for (const r of res) {
        let ok = false;
        try { ok = typeOk(JSON.parse(r.choices[0].text), 'object'); } catch (e) { ok = false; }
        check(ok && r.choices[0].finish_reason === 'stop', `completions json_object: ${JSON.stringify(r.choices[0].text)}`);
    }
}

// a budget below the shortest instance: cut by max_tokens, reported as such
// (finish_reason "length", the content a prefix of an instance, never valid)
{
    const c = await one({ type: 'json_schema', json_schema: { name: 'p', schema: person, strict: true } }, person, 3, 9);
    check(c.finish_reason === 'length', `max_tokens 3: finish ${c.finish_reason} (${JSON.stringify(c.message.content)})`);
    let parsed = true;
    try { JSON.parse(c.message.content); } catch (e) { parsed = false; }
    check(!parsed, `max_tokens 3: ${JSON.stringify(c.message.content)} parses: 3 tokens cannot hold a person`);
}

// a budget just above the shortest instance ({"name":"","age":0}: 19 bytes, one
// token each at worst, plus the stop token): steering must close every one
{
    const fmt = { type: 'json_schema', json_schema: { name: 'p', schema: person, strict: true } };
    const res = await pool(N, 4, (i) => one(fmt, person, 20, 5000 + i));
    let bad = 0;
    for (const c of res) {
        let errs;
        try { errs = validate(JSON.parse(c.message.content), person); } catch (e) { errs = [e.message]; }
        if (c.finish_reason !== 'stop') errs.push(`finish_reason ${c.finish_reason}`);
        if (errs.length && bad++ < 3) check(false, `max_tokens 20: ${JSON.stringify(c.message.content)}: ${errs}`);
    }
    check(bad === 0, `max_tokens 20: ${bad} of ${N} did not close`);
    console.log(`max_tokens 20 (tight): ${N - bad}/${N} closed and valid`);
}

// the Responses API's text.format: the same grammar, in the flat shape
{
    const fmt = { type: 'json_schema', name: 'p', schema: person, strict: true };
    const res = await pool(20, 4, (i) => client.responses.create({
        // no seed field in the Responses API: the server draws a fresh one per request
        model: 'tiny', input: 'Answer in JSON.', temperature: 1, max_output_tokens: 32, text: { format: fmt } }));
    for (const r of res) {
        let errs;
        try { errs = validate(JSON.parse(r.output_text), person); } catch (e) { errs = [e.message]; }
        check(errs.length === 0 && r.status === 'completed', `responses json_schema: ${JSON.stringify(r.output_text)} ${r.status}: ${errs}`);
        check(r.text && r.text.format && r.text.format.type === 'json_schema' && r.text.format.name === 'p',
              `responses: text.format not echoed: ${JSON.stringify(r.text)}`);
    }
    const obj = await client.responses.create({ model: 'tiny', input: 'JSON', temperature: 1, max_output_tokens: 24,
                                                text: { format: { type: 'json_object' } } });
    let ok = false;
    try { ok = typeOk(JSON.parse(obj.output_text), 'object'); } catch (e) { ok = false; }
    check(ok && obj.status === 'completed', `responses json_object: ${JSON.stringify(obj.output_text)} ${obj.status}`);
    // streamed: the deltas concatenate to a valid instance
    const stream = await client.responses.create({ model: 'tiny', input: 'JSON', temperature: 1, max_output_tokens: 32,
                                                   stream: true, text: { format: fmt } });
    let text = '', done = null;
    for await (const ev of stream) {
        if (ev.type === 'response.output_text.delta') text += ev.delta;
        if (ev.type === 'response.completed') done = ev.response;
    }
    let errs;
    try { errs = validate(JSON.parse(text), person); } catch (e) { errs = [e.message]; }
    check(errs.length === 0, `responses stream: ${JSON.stringify(text)}: ${errs}`);
    check(done && done.status === 'completed', `responses stream: no response.completed`);
    // refused: 400 naming text.format(.schema) and the keyword's path
    const rrefused = async (format, param, ...words) => {
        try {
            await client.responses.create({ model: 'tiny', input: 'x', max_output_tokens: 4, text: { format } });
            check(false, `responses accepted: ${JSON.stringify(format)}`);
        } catch (e) {
            const ok = e.status === 400 && e.error && e.error.param === param && words.every((w) => e.message.includes(w));
            check(ok, `responses ${JSON.stringify(format)}: ${e.status} ${e.error && e.error.param}: ${e.message}; wanted 400 ${param} ${words}`);
        }
    };
    await rrefused({ type: 'json_schema', name: 'x', schema: { type: 'string', pattern: 'a' } }, 'text.format.schema', '$.pattern');
    await rrefused({ type: 'json_schema', name: 'x', strict: true,
                     schema: { type: 'object', properties: { a: { type: 'integer', minimum: 0 } }, required: ['a'], additionalProperties: false } },
                   'text.format.schema', '$.properties.a.minimum');
    await rrefused({ type: 'yaml' }, 'text.format', 'yaml');
    try {
        await client.responses.create({ model: 'tiny', input: 'x', max_output_tokens: 4, text: { format: { type: 'json_object' } },
                                        tools: [{ type: 'function', name: 'f', parameters: { type: 'object' } }], tool_choice: 'required' });
        check(false, 'responses: json_object with a forced tool call accepted');
    } catch (e) {
        check(e.status === 400 && e.error.param === 'text.format' && e.message.includes('forced tool call'),
              `responses forced tool + format: ${e.status} ${e.error && e.error.param}: ${e.message}`);
    }
}

// ---- refused: 400 naming the field, the keyword and its path ----------------
async function refused(body, param, ...words) {
    try {
        await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'x' }], max_tokens: 4, ...body });
        check(false, `accepted: ${JSON.stringify(body)}`);
    } catch (e) {
        const ok = e.status === 400 && e.error && e.error.param === param && words.every((w) => e.message.includes(w));
        check(ok, `${JSON.stringify(body)}: ${e.status} ${e.error && e.error.param}: ${e.message}; wanted 400 ${param} ${words}`);
    }
}
const js = (schema, strict = true) => ({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema, strict } } });
const P = 'response_format.json_schema.schema';
await refused(js({ type: 'string', pattern: '^a' }, false), P, '$.pattern', 'pattern');
await refused(js({ type: 'object', properties: { d: { type: 'string', format: 'date' } }, required: ['d'], additionalProperties: false }),
              P, '$.properties.d.format', 'format');
await refused(js({ type: 'string', minLength: 1 }, false), P, '$.minLength');
await refused(js({ type: 'integer', minimum: 0 }, false), P, '$.minimum');
await refused(js({ oneOf: [{ type: 'string' }] }, false), P, '$.oneOf');
await refused(js({ allOf: [{ type: 'string' }] }, false), P, '$.allOf');
await refused(js({ not: { type: 'string' } }, false), P, '$.not');
await refused(js({ type: 'object', patternProperties: { '^x': {} } }, false), P, '$.patternProperties');
await refused(js({ anyOf: [{ type: 'integer' }, { type: 'number' }] }, false), P, 'alternatives 0 and 1');
await refused(js({ type: 'object', properties: { a: { type: 'string' } }, additionalProperties: false }), P, "'a'", 'required');
await refused(js({ type: 'object', properties: { a: { type: 'string' } }, required: ['a'] }), P, 'additionalProperties');
await refused({ response_format: { type: 'yaml' } }, 'response_format', 'yaml');
await refused({ response_format: { type: 'json_schema' } }, 'response_format.json_schema');
await refused({ response_format: { type: 'json_object' }, ignore_eos: true }, 'response_format', 'ignore_eos');
await refused({ response_format: { type: 'json_object' },
                tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }] },
              'response_format', 'tools');
const tool = { type: 'function', function: { name: 'f', parameters: { type: 'object' } } };
await refused({ response_format: { type: 'json_object' }, tools: [tool], tool_choice: 'required' },
              'response_format', 'forced tool call');
await refused({ response_format: { type: 'json_object' }, tools: [tool], tool_choice: { type: 'function', function: { name: 'f' } } },
              'response_format', 'forced tool call');
// tool_choice "none": the tools are neither rendered nor parsed, the two are compatible
{
    const r = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'x' }], max_tokens: 24,
                                                      temperature: 1, seed: 3, tools: [tool], tool_choice: 'none',
                                                      response_format: { type: 'json_object' } });
    let ok = false;
    try { ok = typeOk(JSON.parse(r.choices[0].message.content), 'object'); } catch (e) { ok = false; }
    check(ok && r.choices[0].finish_reason === 'stop', `tool_choice none + json_object: ${JSON.stringify(r.choices[0].message)}`);
}

process.exit(failed);
