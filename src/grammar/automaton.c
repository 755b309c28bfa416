/* The pushdown automaton over bytes (grammar_impl.h explains nodes and
 * frames). gm_step feeds one byte to the top frame; the frame consumes it
 * (changing its state, or ending: popped), passes it on (a number or a
 * literal that is complete and cannot take it: popped, the byte goes to the
 * frame below), pushes a member's frame that takes the byte, or rejects it.
 * Each step also keeps what it overwrote, so the trie walk (vocab.c) takes
 * steps back without copying stacks, and a rejected step leaves no trace.
 *
 * gm_fin counts the bytes of the shortest completion of a stack: the sum of
 * each frame's own remainder (a container in an "after a member" state
 * counts what follows the member that is open above it). It is exact, so
 * along a shortest completion it falls by one per byte: what the mask's
 * steering towards closing relies on. */
#include <string.h>

#include "grammar/grammar_impl.h"

/* States per kind. */
enum { S_OPEN = 0, S_BODY, S_U8, S_ESC, S_HEX };                            /* STR */
enum { N_START = 0, N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP }; /* NUM, INT */
enum { O_OPEN = 0, O_FIRST, O_KEY, O_COLON, O_VAL, O_AFTER, O_COMMA };       /* OBJ, ANYOBJ */
enum { R_OPEN = 0, R_FIRST, R_AFTER, R_NEXT };                               /* ARR */

/* Results of one frame's byte. */
typedef enum { F_OK, F_POP, F_PASS, F_PUSH, F_AGAIN, F_REJ } fres;

static bool has_first(const gm_node *n, uint8_t c) { return (n->first[c >> 6] >> (c & 63)) & 1; }

/* UTF-8: the range the next continuation byte must fall in, by code. */
static const uint8_t u8_lo[5] = {0x80, 0xA0, 0x80, 0x90, 0x80};
static const uint8_t u8_hi[5] = {0xBF, 0xBF, 0x9F, 0xBF, 0x8F};

static fres str_byte(gm_frame *f, uint8_t c) {
    switch (f->st) {
    case S_OPEN:
        if (c != '"')
            return F_REJ;
        f->st = S_BODY;
        return F_OK;
    case S_BODY:
        if (c == '"')
            return F_POP;
        if (c == '\\') {
            f->st = S_ESC;
            return F_OK;
        }
        if (c < 0x20)
            return F_REJ;
        if (c < 0x80)
            return F_OK;
        if (c >= 0xC2 && c <= 0xDF)
            f->x = 1, f->k = 0;
        else if (c == 0xE0)
            f->x = 2, f->k = 1;
        else if (c == 0xED)
            f->x = 2, f->k = 2;
        else if (c >= 0xE1 && c <= 0xEF)
            f->x = 2, f->k = 0;
        else if (c == 0xF0)
            f->x = 3, f->k = 3;
        else if (c >= 0xF1 && c <= 0xF3)
            f->x = 3, f->k = 0;
        else if (c == 0xF4)
            f->x = 3, f->k = 4;
        else
            return F_REJ; /* continuation byte, overlong C0/C1, F5..FF */
        f->st = S_U8;
        return F_OK;
    case S_U8:
        if (c < u8_lo[f->k] || c > u8_hi[f->k])
            return F_REJ;
        f->k = 0;
        if (--f->x == 0)
            f->st = S_BODY;
        return F_OK;
    case S_ESC:
        if (c == 'u') {
            f->st = S_HEX;
            f->x = 4;
            f->k = 0;
            return F_OK;
        }
        if (!strchr("\"\\/bfnrt", c) || !c)
            return F_REJ;
        f->st = S_BODY;
        return F_OK;
    case S_HEX: {
        bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (!hex)
            return F_REJ;
        /* no surrogates: a lone \uD800-\uDFFF is not text (jansson refuses it) */
        if (f->x == 3 && f->k && !(c >= '0' && c <= '7'))
            return F_REJ;
        f->k = f->x == 4 && (c == 'd' || c == 'D');
        if (--f->x == 0)
            f->st = S_BODY;
        return F_OK;
    }
    }
    return F_REJ;
}

static bool num_complete(const gm_frame *f) {
    return f->st == N_ZERO || f->st == N_INT || f->st == N_FRAC || f->st == N_EXP;
}

static fres num_byte(gm_frame *f, bool integer, uint8_t c) {
    bool digit = c >= '0' && c <= '9';
    switch (f->st) {
    case N_START:
        if (c == '-') {
            f->st = N_MINUS;
            return F_OK;
        }
        /* fall through */
    case N_MINUS:
        if (!digit)
            return F_REJ;
        f->st = c == '0' ? N_ZERO : N_INT;
        f->k = 1;
        return F_OK;
    case N_INT:
        if (digit) {
            if (f->k >= GM_NUM_DIGITS)
                return F_PASS; /* complete: a longer number is refused, the byte goes below */
            f->k++;
            return F_OK;
        }
        /* fall through */
    case N_ZERO:
        if (!integer && c == '.') {
            f->st = N_DOT;
            return F_OK;
        }
        if (!integer && (c == 'e' || c == 'E')) {
            f->st = N_E;
            return F_OK;
        }
        return F_PASS;
    case N_DOT:
        if (!digit)
            return F_REJ;
        f->st = N_FRAC;
        f->k = 1;
        return F_OK;
    case N_FRAC:
        if (digit && f->k < GM_NUM_DIGITS) {
            f->k++;
            return F_OK;
        }
        if (c == 'e' || c == 'E') {
            f->st = N_E;
            return F_OK;
        }
        return F_PASS;
    case N_E:
        if (c == '+' || c == '-') {
            f->st = N_ESIGN;
            return F_OK;
        }
        /* fall through */
    case N_ESIGN:
        if (!digit)
            return F_REJ;
        f->st = N_EXP;
        f->k = 1;
        return F_OK;
    case N_EXP:
        if (digit && f->k < GM_EXP_DIGITS) {
            f->k++;
            return F_OK;
        }
        return F_PASS;
    }
    return F_REJ;
}

static fres lit_byte(const gm_node *n, gm_frame *f, uint8_t c) {
    uint32_t lo = f->a, hi = f->b, k = f->k;
    while (lo < hi && (n->llen[lo] <= k || (uint8_t)n->lits[lo][k] < c))
        lo++;
    uint32_t e = lo;
    while (e < hi && n->llen[e] > k && (uint8_t)n->lits[e][k] == c)
        e++;
    if (e == lo) /* the byte extends no literal: the frame may end before it */
        return n->llen[f->a] == k ? F_PASS : F_REJ;
    f->a = lo;
    f->b = e;
    f->k++;
    return n->llen[lo] == f->k && e == lo + 1 ? F_POP : F_OK; /* complete and alone: nothing extends it */
}

/* OBJ: the candidates for the next key: properties from `next` up to and
 * including the first required one. */
static uint64_t obj_cands(const gm_node *n, uint32_t next) {
    uint64_t m = 0;
    for (uint32_t j = next; j < n->nprops; j++) {
        m |= (uint64_t)1 << j;
        if (n->props[j].req)
            break;
    }
    return m;
}

static bool obj_may_close(const gm_node *n, uint32_t next) { return n->rq[next] == 0; }

static fres obj_byte(const gm_node *n, gm_frame *f, uint8_t c, int32_t *push) {
    switch (f->st) {
    case O_OPEN:
        if (c != '{')
            return F_REJ;
        f->st = O_FIRST;
        return F_OK;
    case O_FIRST:
    case O_AFTER:
        if (c == '}' && obj_may_close(n, f->a))
            return F_POP;
        if (f->st == O_AFTER) {
            if (c != ',' || !obj_cands(n, f->a))
                return F_REJ;
            f->st = O_COMMA;
            return F_OK;
        }
        /* a key */
        /* fall through */
    case O_COMMA:
        if (c != '"' || !(f->mask = obj_cands(n, f->a)))
            return F_REJ;
        f->st = O_KEY;
        f->k = 1;
        return F_OK;
    case O_KEY: {
        uint64_t m = 0;
        for (uint64_t r = f->mask; r; r &= r - 1) {
            int j = __builtin_ctzll(r);
            if (n->props[j].klen > f->k && (uint8_t)n->props[j].key[f->k] == c)
                m |= (uint64_t)1 << j;
        }
        if (!m)
            return F_REJ;
        f->mask = m;
        f->k++;
        int j = __builtin_ctzll(m);
        if (n->props[j].klen == f->k) { /* keys end in a quote: no key is a prefix of another */
            f->b = (uint32_t)j;
            f->a = (uint32_t)j + 1;
            f->st = O_COLON;
        }
        return F_OK;
    }
    case O_COLON:
        if (c != ':')
            return F_REJ;
        f->st = O_VAL;
        return F_OK;
    case O_VAL:
        f->st = O_AFTER;
        *push = n->props[f->b].node;
        return F_PUSH;
    }
    return F_REJ;
}

static fres anyobj_byte(const mk_grammar *g, gm_frame *f, uint8_t c, int32_t *push) {
    switch (f->st) {
    case O_OPEN:
        if (c != '{')
            return F_REJ;
        f->st = O_FIRST;
        return F_OK;
    case O_FIRST:
    case O_AFTER:
        if (c == '}')
            return F_POP;
        if (f->st == O_AFTER) {
            if (c != ',')
                return F_REJ;
            f->st = O_COMMA;
            return F_OK;
        }
        /* fall through */
    case O_COMMA:
        if (c != '"')
            return F_REJ;
        f->st = O_COLON;
        *push = g->str; /* the key */
        return F_PUSH;
    case O_COLON:
        if (c != ':')
            return F_REJ;
        f->st = O_VAL;
        return F_OK;
    case O_VAL:
        f->st = O_AFTER;
        *push = g->any;
        return F_PUSH;
    }
    return F_REJ;
}

static fres arr_byte(const gm_node *n, gm_frame *f, uint8_t c, int32_t *push) {
    switch (f->st) {
    case R_OPEN:
        if (c != '[')
            return F_REJ;
        f->st = R_FIRST;
        return F_OK;
    case R_FIRST:
        if (c == ']' && n->min_items == 0)
            return F_POP;
        if (n->max_items == 0)
            return F_REJ;
        /* the first item */
        /* fall through */
    case R_NEXT:
        f->st = R_AFTER;
        f->a++;
        *push = n->child;
        return F_PUSH;
    case R_AFTER:
        if (c == ']' && (int64_t)f->a >= n->min_items)
            return F_POP;
        if (c != ',' || (int64_t)f->a >= n->max_items)
            return F_REJ;
        f->st = R_NEXT;
        return F_OK;
    }
    return F_REJ;
}

/* A fresh frame of node (its state 0; a literal's whole range). */
static gm_frame frame_new(const mk_grammar *g, int32_t node) {
    gm_frame f = {.node = node};
    if (g->nodes[node].kind == GN_LIT)
        f.b = g->nodes[node].nlits;
    return f;
}

static fres frame_byte(const mk_grammar *g, gm_frame *f, uint8_t c, int32_t *push) {
    const gm_node *n = &g->nodes[f->node];
    switch (n->kind) {
    case GN_STR: return str_byte(f, c);
    case GN_NUM: return num_byte(f, false, c);
    case GN_INT: return num_byte(f, true, c);
    case GN_LIT: return lit_byte(n, f, c);
    case GN_OBJ: return obj_byte(n, f, c, push);
    case GN_ANYOBJ: return anyobj_byte(g, f, c, push);
    case GN_ARR: return arr_byte(n, f, c, push);
    case GN_REF:
        *f = frame_new(g, n->child);
        return F_AGAIN;
    case GN_ALT:
        for (uint32_t i = 0; i < n->nalts; i++)
            if (has_first(&g->nodes[n->alts[i]], c)) {
                *f = frame_new(g, n->alts[i]);
                return F_AGAIN;
            }
        return F_REJ;
    }
    return F_REJ;
}

void gm_stack_init(const mk_grammar *g, gm_stack *s) {
    s->depth = 1;
    s->f[0] = frame_new(g, g->root);
}

/* Keep frame i's old value (once per step). False when the record is
 * full: never, as a step changes at most the frame that takes the byte and
 * the one it pushes over a popped one; the step is refused rather than
 * made unreturnable. */
static bool save(gm_undo *u, const gm_stack *s, int i) {
    if (i >= u->depth)
        return true; /* above the old top: nothing of the old state there */
    for (int k = 0; k < u->n; k++)
        if (u->idx[k] == i)
            return true;
    if (u->n == 2)
        return false;
    u->idx[u->n] = i;
    u->old[u->n++] = s->f[i];
    return true;
}

void gm_unstep(gm_stack *s, const gm_undo *u) {
    for (int k = u->n - 1; k >= 0; k--)
        s->f[u->idx[k]] = u->old[k];
    s->depth = u->depth;
}

bool gm_step(const mk_grammar *g, gm_stack *s, uint8_t c, gm_undo *u) {
    u->depth = s->depth;
    u->n = 0;
    while (s->depth > 0) {
        int i = s->depth - 1;
        if (!save(u, s, i))
            break;
        int32_t push = -1;
        switch (frame_byte(g, &s->f[i], c, &push)) {
        case F_OK: return true;
        case F_POP: s->depth--; return true;
        case F_PASS: s->depth--; continue;
        case F_AGAIN: continue;
        case F_PUSH:
            if (s->depth >= MK_GRAMMAR_MAX_DEPTH || !save(u, s, s->depth))
                goto reject;
            s->f[s->depth++] = frame_new(g, push);
            continue;
        case F_REJ: goto reject;
        }
    }
reject:
    gm_unstep(s, u);
    return false;
}

/* A number or literal that may end here. */
static bool frame_complete(const mk_grammar *g, const gm_frame *f) {
    const gm_node *n = &g->nodes[f->node];
    if (n->kind == GN_NUM || n->kind == GN_INT)
        return num_complete(f);
    if (n->kind == GN_LIT)
        return n->llen[f->a] == f->k;
    return false;
}

bool gm_done(const mk_grammar *g, const gm_stack *s) {
    return s->depth == 0 || (s->depth == 1 && frame_complete(g, &s->f[0]));
}

bool gm_in_plain_string(const mk_grammar *g, const gm_stack *s) {
    if (s->depth == 0)
        return false;
    const gm_frame *f = &s->f[s->depth - 1];
    return g->nodes[f->node].kind == GN_STR && f->st == S_BODY;
}

static int64_t minlen(const mk_grammar *g, int32_t node) { return g->nodes[node].minlen; }

/* OBJ: the shortest rest of the object once key j is chosen (after the key):
 * colon, value, the required members after it, the brace. */
static int64_t obj_after_key(const mk_grammar *g, const gm_node *n, uint32_t j) {
    return 1 + minlen(g, n->props[j].node) + n->rq[j + 1] + 1;
}

static int64_t obj_keys_min(const mk_grammar *g, const gm_node *n, uint64_t mask, uint32_t k) {
    int64_t best = GM_INF;
    for (uint64_t r = mask; r; r &= r - 1) {
        uint32_t j = (uint32_t)__builtin_ctzll(r);
        int64_t v = (int64_t)(n->props[j].klen - k) + obj_after_key(g, n, j);
        if (v < best)
            best = v;
    }
    return best;
}

static int64_t frame_fin(const mk_grammar *g, const gm_frame *f) {
    const gm_node *n = &g->nodes[f->node];
    switch (n->kind) {
    case GN_STR:
        switch (f->st) {
        case S_OPEN: return 2;
        case S_BODY: return 1;
        case S_ESC: return 2;
        default: return f->x + 1; /* S_U8, S_HEX */
        }
    case GN_NUM:
    case GN_INT: return num_complete(f) ? 0 : 1;
    case GN_LIT: {
        int64_t best = GM_INF;
        for (uint32_t i = f->a; i < f->b; i++)
            if ((int64_t)n->llen[i] - f->k < best)
                best = (int64_t)n->llen[i] - f->k;
        return best;
    }
    case GN_OBJ:
        switch (f->st) {
        case O_OPEN: return n->minlen;
        case O_FIRST: return n->rq[f->a] + 1 - (n->rq[f->a] > 0);
        case O_KEY: return obj_keys_min(g, n, f->mask, f->k);
        case O_COLON: return obj_after_key(g, n, f->b);
        case O_VAL: return obj_after_key(g, n, f->b) - 1;
        case O_AFTER: return n->rq[f->a] + 1;
        default: return obj_keys_min(g, n, obj_cands(n, f->a), 0); /* O_COMMA */
        }
    case GN_ANYOBJ:
        switch (f->st) {
        case O_OPEN: return 2;
        case O_FIRST: return 1;
        case O_COLON: return 3; /* :0} (the key's frame counts its own quote) */
        case O_VAL: return 2;
        case O_AFTER: return 1;
        default: return 5; /* O_COMMA: "":0} */
        }
    case GN_ARR: {
        int64_t ml = minlen(g, n->child), need = n->min_items - (int64_t)f->a;
        switch (f->st) {
        case R_OPEN: return n->minlen;
        case R_FIRST: return n->min_items == 0 ? 1 : n->min_items * (ml + 1);
        case R_AFTER: return (need > 0 ? need * (1 + ml) : 0) + 1;
        default: return ml + (need > 1 ? (need - 1) * (1 + ml) : 0) + 1; /* R_NEXT */
        }
    }
    case GN_ALT:
    case GN_REF: return n->minlen;
    }
    return GM_INF;
}

int64_t gm_fin(const mk_grammar *g, const gm_stack *s) {
    int64_t t = 0;
    for (int i = 0; i < s->depth; i++)
        t += frame_fin(g, &s->f[i]);
    return t;
}
