/* moekit tokenize: text <-> token ids with a model's own tokenizer, one JSON
 * value per line, so that any other implementation (HF tokenizers,
 * transformers.js) can be diffed against it line by line.
 *
 * Encode reads JSON strings and writes JSON arrays of ids; --decode the
 * reverse; --chat renders JSON message lists with the model's chat template.
 * A line that is not what the mode expects stops the run with its line
 * number (exit 2); the lines before it have been written. With --keep-going
 * such a line writes {"error": message} in its place and the run goes on
 * (exit 2 at the end), so that a whole file is compared in one run. */
#include <getopt.h>
#include <stdbool.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_esc.h"
#include "cli_flags.h"
#include "cmd.h"
#include "engine_cli.h"
#include "moekit/chat.h"
#include "moekit/tokenizer.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: moekit tokenize [options] TOKENIZER.json|MODEL_DIR < lines\n"
            "\n"
            "Tokenize with a Hugging Face tokenizer.json (byte-level BPE: Qwen3, Qwen3.5,\n"
            "DeepSeek-V3, ...). Reads one JSON value per line on stdin and writes one\n"
            "JSON value per line on stdout. MODEL_DIR is a directory holding tokenizer.json\n"
            "(its tokenizer_config.json supplies the chat template).\n"
            "\n"
            "modes:\n"
            "  (default)        each line is a JSON string (newlines inside it as \\n);\n"
            "                   prints its token ids as a JSON array. Special tokens written\n"
            "                   in the text (\"<|im_end|>\") become their ids. BOS/EOS are\n"
            "                   added only where the tokenizer's post-processor adds them\n"
            "                   (Qwen3 and DeepSeek-V3 files add none).\n"
            "  --decode         each line is a JSON array of ids; prints the text as a JSON\n"
            "                   string (invalid UTF-8 from partial tokens becomes U+FFFD)\n"
            "  --chat           each line is a JSON array of messages\n"
            "                   [{\"role\": \"user\", \"content\": \"...\"}, ...] (roles system,\n"
            "                   user, assistant, tool; optional \"reasoning_content\");\n"
            "                   prints the rendered prompt, ending with the assistant's\n"
            "                   opening, as a JSON string. Do not pipe that text into\n"
            "                   `moekit tokenize` for ids: special-token text inside a\n"
            "                   message would become control tokens; use --chat-ids\n"
            "  --chat-ids       as --chat, but prints the prompt's token ids: the\n"
            "                   template's markers are special tokens, the messages' text\n"
            "                   never is (what `moekit run --chat` feeds the model)\n"
            "\n"
            "options:\n"
            "  --no-add-special  encode: do not let the post-processor add BOS/EOS\n"
            "  --split-special   encode: treat special-token text as plain text (what a\n"
            "                    server should do with user input)\n"
            "  --skip-special    decode: leave special tokens out of the text\n"
            "  --template NAME   chat: chatml | qwen3 | qwen3-think | deepseek3 | deepseek3.2 |\n"
            "                    glm4 | glm4.7 | minimax-m2 | harmony | kimi-k2 instead of\n"
            "                    the template detected from tokenizer_config.json or\n"
            "                    chat_template.jinja\n"
            "  --no-think        chat: enable_thinking=false (Qwen3: the prompt ends with an\n"
            "                    empty <think></think> block; GLM: /nothink too)\n"
            "  --no-gen-prompt   chat: do not append the assistant's opening\n"
            "  --keep-going      a line that is bad input (exit 2) writes {\"error\": message}\n"
            "                    in its place and the next line is read; exit 2 at the end\n"
            "  --max-line BYTES  longest input line accepted (default 64 MiB): a longer\n"
            "                    line is an error, not read into memory whole\n"
            "  -h, --help        this text\n"
            "\n"
            "exit: 0 ok; 2 bad input (the message names the stdin line or the file field);\n"
            "1 internal failure.\n");
}

typedef struct opts {
    int decode, chat, chat_ids, no_add, split, skip, no_think, no_gen, keep_going;
    const char *template_name, *path;
    size_t max_line; /* bytes of one stdin line, newline excluded */
} opts;

#define TOK_DEFAULT_MAX_LINE ((size_t)64 << 20)

/* One line of f (newline dropped) into *buf, at most `limit` bytes held:
 * the length, -1 at end of input, -2 when the line is longer than limit
 * (the rest of it is skipped unread into memory). */
static ssize_t read_line(FILE *f, char **buf, size_t *cap, size_t limit) {
    size_t n = 0;
    int c;
    bool any = false;
    while ((c = getc(f)) != EOF) {
        any = true;
        if (c == '\n')
            break;
        if (n >= limit) {
            while ((c = getc(f)) != EOF && c != '\n')
                ;
            return -2;
        }
        if (n + 1 >= *cap) {
            size_t nc = *cap ? 2 * *cap : 4096;
            char *nb = realloc(*buf, nc);
            if (!nb)
                return -3;
            *buf = nb;
            *cap = nc;
        }
        (*buf)[n++] = (char)c;
    }
    if (!any)
        return -1;
    if (!*buf && !(*buf = malloc(1)))
        return -3;
    (*buf)[n] = 0;
    return (ssize_t)n;
}

/* "stdin line N: <current message>" and exit 2. */
static int line_fail(size_t line, mk_status s) {
    fprintf(stderr, "moekit tokenize: stdin line %zu: %s\n", line, mk_cli_esc(mk_err_msg()));
    return mk_status_exit_code(s);
}

/* --keep-going: a bad-input line becomes {"error": message} on stdout;
 * true when the run may go on (anything but bad input still stops it). */
static bool line_skip(const opts *o, mk_status s) {
    if (!o->keep_going || mk_status_exit_code(s) != 2)
        return false;
    json_t *v = json_pack("{s:s}", "error", mk_err_msg());
    char *t = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (!t)
        return false;
    fputs(t, stdout);
    fputc('\n', stdout);
    free(t);
    return true;
}

static int print_json(json_t *v) {
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref(v);
    if (!s)
        return -1;
    fputs(s, stdout);
    fputc('\n', stdout);
    free(s);
    return 0;
}

static const char *jtype(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

static void print_ids(const int32_t *ids, size_t n) {
    putchar('[');
    for (size_t i = 0; i < n; i++)
        printf(i ? ",%d" : "%d", (int)ids[i]);
    fputs("]\n", stdout);
}

static mk_status do_encode(const mk_tok *tok, const opts *o, const json_t *v) {
    if (!json_is_string(v))
        return mk_err(MK_E_FORMAT, "expected a JSON string of text, found %s", jtype(v));
    int32_t *ids;
    size_t n;
    unsigned flags = (o->no_add ? 0 : MK_TOK_ADD_SPECIAL) | (o->split ? MK_TOK_SPLIT_SPECIAL : 0);
    MK_TRY(mk_tok_encode(tok, json_string_value(v), json_string_length(v), flags, &ids, &n));
    print_ids(ids, n);
    free(ids);
    return MK_OK;
}

static mk_status do_decode(const mk_tok *tok, const opts *o, const json_t *v) {
    if (!json_is_array(v))
        return mk_err(MK_E_FORMAT, "expected a JSON array of token ids, found %s", jtype(v));
    size_t n = json_array_size(v);
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids)
        return mk_err(MK_E_NOMEM, "out of memory for %zu ids", n);
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(v, i);
        if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > INT32_MAX) {
            free(ids);
            return mk_err(MK_E_FORMAT, "element %zu: expected a non-negative integer id", i);
        }
        ids[i] = (int32_t)json_integer_value(e);
    }
    char *text;
    size_t len;
    mk_status st = mk_tok_decode(tok, ids, n, o->skip, &text, &len);
    free(ids);
    if (st != MK_OK)
        return st;
    st = print_json(json_stringn(text, len)) ? mk_err(MK_E_NOMEM, "cannot format output") : MK_OK;
    free(text);
    return st;
}

static mk_status do_chat(const mk_tok *tok, mk_chat_kind kind, const opts *o, const json_t *v) {
    if (!json_is_array(v))
        return mk_err(MK_E_FORMAT, "expected a JSON array of messages, found %s", jtype(v));
    size_t n = json_array_size(v);
    mk_chat_msg *m = calloc(n ? n : 1, sizeof *m);
    if (!m)
        return mk_err(MK_E_NOMEM, "out of memory for %zu messages", n);
    mk_status st = MK_OK;
    for (size_t i = 0; i < n && st == MK_OK; i++) {
        const json_t *e = json_array_get(v, i), *r = json_object_get(e, "role"),
                     *c = json_object_get(e, "content"), *rc = json_object_get(e, "reasoning_content");
        if (!json_is_string(r) || (c && !json_is_null(c) && !json_is_string(c)) || (rc && !json_is_null(rc) && !json_is_string(rc)))
            st = mk_err(MK_E_FORMAT, "message %zu: expected {\"role\": string, \"content\": string}", i);
        else
            m[i] = (mk_chat_msg){json_string_value(r), json_string_value(c), json_string_value(rc)};
    }
    char *text = NULL;
    unsigned flags = (o->no_gen ? 0 : MK_CHAT_GENERATION_PROMPT) | (o->no_think ? MK_CHAT_NO_THINKING : 0);
    if (st == MK_OK && o->chat_ids) {
        int32_t *ids = NULL;
        size_t nid = 0;
        st = mk_chat_encode(tok, kind, m, n, flags, &ids, &nid);
        if (st == MK_OK)
            print_ids(ids, nid);
        free(ids);
        free(m);
        return st;
    }
    if (st == MK_OK)
        st = mk_chat_render(kind, m, n, flags, &text);
    free(m);
    if (st == MK_OK && print_json(json_string(text)))
        st = mk_err(MK_E_NOMEM, "cannot format output");
    free(text);
    return st;
}

static int parse_args(int argc, char **argv, opts *o) {
    enum { O_NOADD = 256, O_SPLIT, O_SKIP, O_TEMPLATE, O_NOTHINK, O_NOGEN, O_CHATIDS, O_MAXLINE, O_KEEP };
    static const struct option lo[] = {
        {"decode", no_argument, NULL, 'd'},        {"chat", no_argument, NULL, 'c'},
        {"no-add-special", no_argument, NULL, O_NOADD}, {"split-special", no_argument, NULL, O_SPLIT},
        {"skip-special", no_argument, NULL, O_SKIP}, {"template", required_argument, NULL, O_TEMPLATE},
        {"no-think", no_argument, NULL, O_NOTHINK}, {"no-gen-prompt", no_argument, NULL, O_NOGEN},
        {"chat-ids", no_argument, NULL, O_CHATIDS}, {"max-line", required_argument, NULL, O_MAXLINE},
        {"keep-going", no_argument, NULL, O_KEEP}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long long ml;
    int c, rc;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'd': o->decode = 1; break;
        case 'c': o->chat = 1; break;
        case O_CHATIDS: o->chat = o->chat_ids = 1; break;
        case O_NOADD: o->no_add = 1; break;
        case O_SPLIT: o->split = 1; break;
        case O_SKIP: o->skip = 1; break;
        case O_TEMPLATE: o->template_name = optarg; break;
        case O_NOTHINK: o->no_think = 1; break;
        case O_NOGEN: o->no_gen = 1; break;
        case O_KEEP: o->keep_going = 1; break;
        case O_MAXLINE:
            if ((rc = mk_flag_int("tokenize", "--max-line", optarg, 1, (long long)1 << 40, &ml)) >= 0)
                return rc;
            o->max_line = (size_t)ml;
            break;
        case 'h': help(stdout); return 0;
        default: return mk_cli_usage("tokenize", "unknown option");
        }
    }
    if (optind != argc - 1)
        return mk_cli_usage("tokenize", "expected one TOKENIZER.json or MODEL_DIR");
    if (o->decode && o->chat)
        return mk_cli_usage("tokenize", "--decode and --chat are separate modes");
    o->path = argv[optind];
    return -1;
}

static int run(const opts *o, const mk_tok *tok, mk_chat_kind kind) {
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t len;
    int rc = 0, skipped = 0;
    bool interactive = isatty(STDIN_FILENO);
    while (rc == 0 && (len = read_line(stdin, &line, &cap, o->max_line)) != -1) {
        lineno++;
        if (len == -3) {
            rc = line_fail(lineno, mk_err(MK_E_NOMEM, "no memory for the line"));
            break;
        }
        if (len == -2) {
            mk_status st = mk_err(MK_E_ARG, "the line is longer than %zu bytes (--max-line); "
                                  "nothing of it was tokenized", o->max_line);
            if (line_skip(o, st)) {
                skipped = line_fail(lineno, st);
                continue;
            }
            rc = line_fail(lineno, st);
            break;
        }
        json_error_t e;
        json_t *v = json_loadb(line, (size_t)len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
        mk_status st;
        if (!v)
            st = mk_err(MK_E_FORMAT, "invalid JSON at column %d: %s", e.column, e.text);
        else if (o->chat)
            st = do_chat(tok, kind, o, v);
        else if (o->decode)
            st = do_decode(tok, o, v);
        else
            st = do_encode(tok, o, v);
        json_decref(v);
        if (st != MK_OK && line_skip(o, st))
            skipped = line_fail(lineno, st);
        else if (st != MK_OK)
            rc = line_fail(lineno, st);
        else if (interactive)
            fflush(stdout);
    }
    free(line);
    if (rc == 0)
        rc = skipped;
    if (fflush(stdout) != 0 && rc == 0) {
        perror("moekit tokenize: writing stdout");
        rc = 1;
    }
    return rc;
}

static int cmd_tokenize(int argc, char **argv) {
    opts o = {.max_line = TOK_DEFAULT_MAX_LINE};
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0)
        return rc;
    mk_tok *tok = NULL;
    mk_chat_kind kind = MK_CHAT_CHATML;
    mk_status st = o.chat ? mk_chat_detect(o.path, o.template_name, &kind) : MK_OK;
    if (st == MK_OK && (!o.chat || o.chat_ids))
        st = mk_tok_load(o.path, &tok);
    if (st != MK_OK)
        return mk_cli_fail(st);
    rc = run(&o, tok, kind);
    mk_tok_free(tok);
    return rc;
}

MK_CMD_REGISTER(tokenize, 60, "text <-> token ids (JSON lines) and chat prompts with a model's tokenizer",
                cmd_tokenize)
