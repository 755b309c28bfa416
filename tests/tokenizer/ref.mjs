// Reference side of tests/cli/tokenize_lenml.sh (test-only, never shipped).
//
// Uses @lenml/tokenizers (a JavaScript port of Hugging Face tokenizers, the
// transformers.js implementation) and @huggingface/jinja, installed by
// scripts/install-deps.d/tokenizer.sh into $REPO/.tokenizers, to produce the
// values moekit must match. Every mode reads JSON lines on stdin and writes
// JSON lines on stdout, like `moekit tokenize`.
//
//   node ref.mjs encode MODEL        JSON strings  -> id arrays (add_special_tokens: true)
//   node ref.mjs decode MODEL        id arrays     -> JSON strings
//   node ref.mjs chat MODEL [--no-think]
//                                    message lists -> prompt rendered by the model's own
//                                    Jinja chat_template (add_generation_prompt: true)
//   node ref.mjs nfc                 JSON strings  -> NFC-normalized JSON strings
//   node ref.mjs compare A B CORPUS  report lines where A and B differ (exit 1 if any)
//   node ref.mjs check MODEL CORPUS IDS TEXTS nfc|raw
//                                    all tokenizer checks in one process (one load):
//                                    IDS (moekit's ids for CORPUS) == reference ids,
//                                    TEXTS (moekit's decode of IDS) == reference decode of IDS
//                                    == CORPUS (NFC-normalized when `nfc`)
//   node ref.mjs check MODEL CORPUS IDS TEXTS nfc|raw PROMPTS PROMPT_IDS CHATS
//                                    and, with the same load, PROMPT_IDS (moekit's
//                                    --chat-ids of CHATS) == reference ids of PROMPTS
//                                    (the prompts as JSON strings)
//   node ref.mjs jsonline FILE       the whole file as one JSON string line
//   node ref.mjs path NAME           print the model dir of a packaged tokenizer
//                                    (qwen3 | deepseek_v3)
// MODEL is a directory with tokenizer.json and tokenizer_config.json.
import { readFileSync } from "node:fs";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = process.env.MK_SRC || resolve(here, "../..");
const mods = join(process.env.MK_TOKENIZERS || join(repo, ".tokenizers"), "node_modules");

function lines(text) {
  const out = text.split("\n");
  if (out.length && out[out.length - 1] === "") out.pop();
  return out;
}

const readStdin = () => lines(readFileSync(0, "utf8"));
const emit = (vals) => process.stdout.write(vals.map((v) => JSON.stringify(v)).join("\n") + (vals.length ? "\n" : ""));

async function loadTokenizer(dir) {
  const { TokenizerLoader } = await import(pathToFileURL(join(mods, "@lenml/tokenizers/dist/main.mjs")));
  const tokenizerJSON = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
  const tokenizerConfig = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
  return { tok: TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig }), config: tokenizerConfig };
}

function tokenContent(v) {
  return v && typeof v === "object" ? v.content : v ?? "";
}

async function chat(dir, noThink) {
  const { Template } = await import(pathToFileURL(join(mods, "@huggingface/jinja/dist/index.js")));
  const config = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
  const tmpl = new Template(config.chat_template);
  const ctx = (messages) => {
    const c = {
      messages,
      add_generation_prompt: true,
      bos_token: tokenContent(config.bos_token),
      eos_token: tokenContent(config.eos_token),
    };
    if (noThink) c.enable_thinking = false;
    return c;
  };
  emit(readStdin().map((l) => tmpl.render(ctx(JSON.parse(l)))));
}

const clip = (s) => (s.length > 300 ? s.slice(0, 300) + "..." : s);

// Lines of JSON values A (named an) and B (bn); returns the number that differ.
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

const readJsonLines = (f) => lines(readFileSync(f, "utf8")).map((l) => JSON.parse(l));

function compare(a, b, corpus) {
  const C = corpus ? lines(readFileSync(corpus, "utf8")) : [];
  process.exit(diff(readJsonLines(a), a, readJsonLines(b), b, C, "compare") ? 1 : 0);
}

async function check(dir, corpus, idsFile, textsFile, nfc, prompts, promptIds, chats) {
  const { tok } = await loadTokenizer(dir);
  const raw = lines(readFileSync(corpus, "utf8"));
  const texts = raw.map((l) => JSON.parse(l));
  const ours = readJsonLines(idsFile), ourTexts = readJsonLines(textsFile);
  const refIds = texts.map((t) => Array.from(tok.encode(t, { add_special_tokens: true })));
  let bad = diff(refIds, "@lenml/tokenizers", ours, "moekit", raw, "encode");
  const refTexts = ours.map((ids) => (ids.length ? tok.decode(ids, { skip_special_tokens: false }) : ""));
  bad += diff(refTexts, "@lenml/tokenizers", ourTexts, "moekit", raw, "decode");
  const want = nfc === "nfc" ? texts.map((t) => t.normalize("NFC")) : texts;
  bad += diff(want, "input", ourTexts, "moekit", raw, "round trip");
  if (prompts) {
    const ref = readJsonLines(prompts).map((t) => Array.from(tok.encode(t, { add_special_tokens: true })));
    bad += diff(ref, "@lenml/tokenizers", readJsonLines(promptIds), "moekit", lines(readFileSync(chats, "utf8")),
                "chat prompt ids");
  }
  process.exit(bad ? 1 : 0);
}

const [mode, arg, ...rest] = process.argv.slice(2);
switch (mode) {
  case "encode": {
    const { tok } = await loadTokenizer(arg);
    emit(readStdin().map((l) => Array.from(tok.encode(JSON.parse(l), { add_special_tokens: true }))));
    break;
  }
  case "decode": {
    const { tok } = await loadTokenizer(arg);
    // transformers.js refuses an empty list; HF decodes it to "".
    const dec = (ids) => (ids.length ? tok.decode(ids, { skip_special_tokens: false }) : "");
    emit(readStdin().map((l) => dec(JSON.parse(l))));
    break;
  }
  case "chat":
    await chat(arg, rest.includes("--no-think"));
    break;
  case "nfc":
    emit(readStdin().map((l) => JSON.parse(l).normalize("NFC")));
    break;
  case "compare":
    compare(arg, rest[0], rest[1]);
    break;
  case "check":
    await check(arg, ...rest);
    break;
  case "jsonline":
    emit([readFileSync(arg, "utf8")]);
    break;
  case "path":
    console.log(join(mods, `@lenml/tokenizer-${arg}`, "models"));
    break;
  default:
    console.error("usage: node ref.mjs encode|decode|chat|nfc|compare|path ...");
    process.exit(2);
}
