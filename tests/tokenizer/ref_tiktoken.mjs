// Reference side of tests/cli/tokenize_tiktoken.sh (test-only, never shipped).
//
// js-tiktoken (a JavaScript port of OpenAI's tiktoken, installed by
// scripts/install-deps.d/tokenizer.sh into $REPO/.tokenizers) encodes and
// decodes with its own cl100k_base / o200k_base ranks and Kimi-K2's split
// pattern; moekit reads the same ranks from a tiktoken.model file that this
// script writes. Large rank files are never committed: they are made here.
//
//   node ref_tiktoken.mjs write RANKS DIR
//        RANKS (cl100k_base | o200k_base) -> DIR/tiktoken.model ("<base64> <rank>"
//        lines) and DIR/tokenizer_config.json laid out as Kimi-K2's: its class in
//        auto_map, added_tokens_decoder naming special tokens right after the ranks
//   node ref_tiktoken.mjs check RANKS DIR CORPUS IDS TEXTS
//        IDS (moekit's ids for the JSON-string lines of CORPUS) == js-tiktoken's
//        encode (special tokens allowed anywhere, as Kimi's encode does) of the
//        chunks Kimi's encode cuts the text into (kimiChunks);
//        TEXTS (moekit's decode of IDS) == js-tiktoken's decode of IDS == CORPUS
//   node ref_tiktoken.mjs encode RANKS DIR   JSON strings -> id arrays
//   node ref_tiktoken.mjs check-o200k DIR CORPUS IDS TEXTS
//        as check, for gpt-oss's o200k_harmony tokenizer.json in DIR: js-tiktoken's
//        o200k_base ranks and pattern, with the special tokens of DIR/tokenizer.json
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = process.env.MK_SRC || resolve(here, "../..");
const mods = join(process.env.MK_TOKENIZERS || join(repo, ".tokenizers"), "node_modules");

// Kimi-K2's pat_str (tokenization_kimi.py) in JavaScript syntax:
// - \p{Han} is written \p{Script=Han} (a bare script name is not allowed in JS);
// - the class intersections [X&&[^\p{Han}]] become (?:(?!\p{Script=Han})[X]);
// - (?i:'s|...) is spelled out: JS (Node 20) has no inline flags; Rust's
//   simple case folding also maps U+017F (long s) to s;
// - \s / \S are \p{White_Space} / \P{White_Space}: that is \s in the Rust
//   regex crate tiktoken runs (JS's own \s adds U+FEFF and leaves out U+0085).
const WS = "\\p{White_Space}", NWS = "\\P{White_Space}";
const HAN = "\\p{Script=Han}";
const UP = `(?:(?!${HAN})[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}])`;
const LO = `(?:(?!${HAN})[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}])`;
const CONTR = "(?:'[sS\\u017F]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";
export const KIMI_PAT_JS = [
  `[${HAN}]+`,
  `[^\\r\\n\\p{L}\\p{N}]?${UP}*${LO}+${CONTR}?`,
  `[^\\r\\n\\p{L}\\p{N}]?${UP}+${LO}*${CONTR}?`,
  `\\p{N}{1,3}`,
  ` ?[^${WS}\\p{L}\\p{N}]+[\\r\\n]*`,
  `[${WS}]*[\\r\\n]+`,
  `[${WS}]+(?!${NWS})`,
  `[${WS}]+`,
].join("|");

// Special tokens named the way Kimi-K2's tokenizer_config.json names them,
// at offsets from the first id after the ranks; the others of the 256
// reserved ids are "<|reserved_token_<id>|>" (tokenization_kimi.py).
const KIMI_NAMED = [
  [0, "[BOS]"], [1, "[EOS]"], [2, "<|im_end|>"], [3, "<|im_user|>"], [4, "<|im_assistant|>"],
  [6, "<|start_header_id|>"], [7, "<|end_header_id|>"], [9, "[EOT]"], [10, "<|im_system|>"],
  [11, "<|tool_calls_section_begin|>"], [12, "<|tool_calls_section_end|>"], [13, "<|tool_call_begin|>"],
  [14, "<|tool_call_argument_begin|>"], [15, "<|tool_call_end|>"], [17, "<|im_middle|>"],
  [254, "[UNK]"], [255, "[PAD]"],
];
const RESERVED = 256;

async function loadRanks(name) {
  if (!["cl100k_base", "o200k_base"].includes(name)) throw new Error(`unknown ranks ${name}`);
  return (await import(pathToFileURL(join(mods, `js-tiktoken/dist/ranks/${name}.js`)))).default;
}

// The js-tiktoken rank table as [base64, rank] pairs.
function rankList(ranks) {
  const out = [];
  for (const line of ranks.bpe_ranks.split("\n")) {
    if (!line) continue;
    const [, off, ...toks] = line.split(" ");
    toks.forEach((t, i) => out.push([t, Number.parseInt(off, 10) + i]));
  }
  return out.sort((a, b) => a[1] - b[1]);
}

function specials(nBase) {
  const named = new Map(KIMI_NAMED.map(([o, s]) => [nBase + o, s]));
  const sp = {};
  for (let id = nBase; id < nBase + RESERVED; id++) sp[named.get(id) ?? `<|reserved_token_${id}|>`] = id;
  return sp;
}

async function write(name, dir) {
  const list = rankList(await loadRanks(name));
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "tiktoken.model"), list.map(([t, r]) => `${t} ${r}\n`).join(""));
  const nBase = list.length;
  const decoder = {};
  for (const [o, s] of KIMI_NAMED)
    decoder[String(nBase + o)] = { content: s, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true };
  const cfg = {
    added_tokens_decoder: decoder,
    auto_map: { AutoTokenizer: ["tokenization_kimi.TikTokenTokenizer", null] },
    bos_token: "[BOS]",
    eos_token: "[EOS]",
    pad_token: "[PAD]",
    unk_token: "[UNK]",
    tokenizer_class: "TikTokenTokenizer",
    model_max_length: 131072,
  };
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(cfg, null, 2) + "\n");
}

async function encoder(name) {
  const { Tiktoken } = await import(pathToFileURL(join(mods, "js-tiktoken/dist/lite.js")));
  const ranks = await loadRanks(name);
  const nBase = rankList(ranks).length;
  // Kimi's special tokens replace the encoding's own (<|endoftext|>, ...).
  return new Tiktoken({ pat_str: KIMI_PAT_JS, special_tokens: specials(nBase), bpe_ranks: ranks.bpe_ranks });
}

function lines(text) {
  const out = text.split("\n");
  if (out.length && out[out.length - 1] === "") out.pop();
  return out;
}

const clip = (s) => (s.length > 300 ? s.slice(0, 300) + "..." : s);

function diff(A, an, B, bn, C, what) {
  let bad = 0;
  if (A.length !== B.length) {
    console.log(`${what}: line counts differ: ${an} has ${A.length}, ${bn} has ${B.length}`);
    bad++;
  }
  for (let i = 0; i < Math.min(A.length, B.length); i++) {
    if (JSON.stringify(A[i]) === JSON.stringify(B[i])) continue;
    if (++bad <= 10) {
      console.log(`${what}: line ${i + 1}: input ${clip(C[i] ?? "?")}`);
      console.log(`  ${an}: ${clip(JSON.stringify(A[i]))}`);
      console.log(`  ${bn}: ${clip(JSON.stringify(B[i]))}`);
    }
  }
  if (bad) console.log(`${what}: ${bad} line(s) differ`);
  return bad;
}

// js-tiktoken's decode, with one repair: its TextDecoder("utf-8") follows
// the WHATWG decode, which drops a leading byte order mark; tiktoken's
// bytes.decode("utf-8", "replace") keeps it (U+FEFF is text, and the corpus
// has a line that starts with it). The bytes are js-tiktoken's own tables.
function refDecode(enc, ids) {
  const text = enc.decode(ids);
  const first = [];
  for (const id of ids) {
    for (const b of enc.textMap.get(id) ?? enc.inverseSpecialTokens[id] ?? []) first.push(b);
    if (first.length >= 3) break;
  }
  const bom = first[0] === 0xef && first[1] === 0xbb && first[2] === 0xbf;
  return bom ? "\uFEFF" + text : text;
}


// o200k_harmony = o200k_base's ranks and pattern + gpt-oss's special tokens
// (<|start|>, <|channel|>, ...), taken from the tokenizer.json under test.
// As above, \s / \S in js-tiktoken's pattern become White_Space.
async function o200kHarmony(dir) {
  const { Tiktoken } = await import(pathToFileURL(join(mods, "js-tiktoken/dist/lite.js")));
  const ranks = await loadRanks("o200k_base");
  const tj = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
  const sp = {};
  for (const a of tj.added_tokens) sp[a.content] = a.id;
  const pat = ranks.pat_str.replaceAll("\\s", WS).replaceAll("\\S", NWS);
  return new Tiktoken({ pat_str: pat, special_tokens: sp, bpe_ranks: ranks.bpe_ranks });
}

// Kimi's encode (tokenization_kimi.py) feeds tiktoken chunks of at most
// 400,000 characters, each cut again where a run of whitespace or of
// non-whitespace (Python's str.isspace) passes 25,000 characters.
const pyIsspace = (c) =>
  (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c === 0x85 || c === 0xa0 || c === 0x1680 ||
  (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000;

function kimiChunks(text) {
  const cps = Array.from(text), out = [];
  for (let i = 0; i < cps.length; i += 400000) {
    const s = cps.slice(i, i + 400000);
    let len = 0, sp = s.length ? pyIsspace(s[0].codePointAt(0)) : false, start = 0;
    for (let k = 0; k < s.length; k++) {
      const now = pyIsspace(s[k].codePointAt(0));
      if (sp !== now) {
        len = 1;
        sp = now;
      } else if (++len > 25000) {
        out.push(s.slice(start, k).join(""));
        start = k;
        len = 1;
      }
    }
    out.push(s.slice(start).join(""));
  }
  return out;
}

async function checkWith(enc, corpus, idsFile, textsFile, kimi = false) {
  const raw = lines(readFileSync(corpus, "utf8"));
  const texts = raw.map((l) => JSON.parse(l));
  const ours = lines(readFileSync(idsFile, "utf8")).map((l) => JSON.parse(l));
  const ourTexts = lines(readFileSync(textsFile, "utf8")).map((l) => JSON.parse(l));
  const encode = kimi ? (t) => kimiChunks(t).flatMap((c) => enc.encode(c, "all")) : (t) => enc.encode(t, "all");
  let bad = diff(texts.map(encode), "js-tiktoken", ours, "moekit", raw, "encode");
  bad += diff(ours.map((ids) => refDecode(enc, ids)), "js-tiktoken", ourTexts, "moekit", raw, "decode");
  bad += diff(texts, "input", ourTexts, "moekit", raw, "round trip");
  process.exit(bad ? 1 : 0);
}

const [mode, a, b, ...rest] = process.argv.slice(2);
switch (mode) {
  case "write":
    await write(a, b);
    break;
  case "check":
    await checkWith(await encoder(a), rest[0], rest[1], rest[2], true);
    break;
  case "check-o200k":
    await checkWith(await o200kHarmony(a), b, rest[0], rest[1]);
    break;
  case "encode": {
    const enc = await encoder(a);
    const out = lines(readFileSync(0, "utf8")).map((l) =>
      JSON.stringify(kimiChunks(JSON.parse(l)).flatMap((c) => enc.encode(c, "all"))));
    process.stdout.write(out.join("\n") + (out.length ? "\n" : ""));
    break;
  }
  default:
    console.error("usage: node ref_tiktoken.mjs write|check|encode RANKS DIR ...");
    process.exit(2);
}
