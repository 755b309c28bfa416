/* Internals of constrained decoding (include/moekit/grammar.h is the API):
 *   schema.c     JSON schema -> a graph of nodes (one per schema object)
 *   automaton.c  the pushdown automaton over bytes: a stack of frames, one
 *                per open value, each a node and its state within it
 *   vocab.c      the vocabulary as a byte trie in preorder, walked with the
 *                automaton to mask tokens
 *
 * A node describes the values one schema position admits; a frame is a
 * value being generated. Containers push a frame for each member's value
 * when its first byte arrives and set their own state to what follows the
 * member first, so a frame never needs telling that its child ended.
 * References (REF) and alternatives (ALT: anyOf, type arrays, "any value")
 * replace their frame in place with the chosen node; alternatives are
 * chosen by the first byte (compile refuses alternatives sharing one). */
#ifndef MK_GRAMMAR_IMPL_H
#define MK_GRAMMAR_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moekit/grammar.h"

#define GM_INF ((int64_t)1 << 40)  /* "no finite instance" in length sums */
#define GM_MAX_PROPS 64            /* properties of one object (a candidate bit mask) */
#define GM_NUM_DIGITS 15           /* digits in a number's integer / fraction part */
/* digits in an exponent: 2, so the largest number, 15 nines with 15 more
 * after the point and e99 (~1e114), is a finite double; 3 digits let
 * "1e999" through, which parses to Infinity (JSON.parse) or is refused as
 * an overflow (jansson) */
#define GM_EXP_DIGITS 2

typedef enum gm_kind {
    GN_STR = 0,  /* any string */
    GN_NUM,      /* any number */
    GN_INT,      /* an integer */
    GN_LIT,      /* one of a sorted set of literal JSON texts (enum, const, true/false/null) */
    GN_OBJ,      /* properties in order; optional ones may be skipped */
    GN_ANYOBJ,   /* any object: free keys, any values */
    GN_ARR,      /* items, minItems..maxItems */
    GN_ALT,      /* one of alts, chosen by the first byte */
    GN_REF,      /* the node `child` (a $ref, resolved after compiling) */
} gm_kind;

typedef struct gm_prop {
    char *key;                 /* the key as JSON text, quotes included */
    uint32_t klen;
    int32_t node;
    bool req;
} gm_prop;

typedef struct gm_node {
    gm_kind kind;
    int32_t child;             /* ARR: items; REF: target */
    int64_t min_items, max_items;
    gm_prop *props;            /* OBJ: [nprops] */
    uint32_t nprops;
    int64_t *rq;               /* OBJ: [nprops + 1] bytes of the required members from i on,
                                  each with its comma: ,"key":value */
    char **lits;               /* LIT: [nlits] sorted (memcmp, shorter first) */
    uint32_t *llen;
    uint32_t nlits;
    int32_t *alts;             /* ALT: [nalts] */
    uint32_t nalts;
    int64_t minlen;            /* bytes of the shortest instance (GM_INF: none) */
    uint64_t first[4];         /* bytes an instance may start with */
} gm_node;

struct mk_grammar {
    gm_node *nodes;
    size_t n, cap;
    int32_t root;
    int32_t str, any;          /* built-in nodes: any string, any value */
};

/* One open value. */
typedef struct gm_frame {
    int32_t node;
    uint8_t st;                /* state within the node (automaton.c) */
    uint8_t x;                 /* STR: UTF-8 continuation / hex digits left */
    uint16_t k;                /* bytes matched of a key or literal; digits */
    uint32_t a, b;             /* OBJ: next property, current one; ARR: count; LIT: range [a, b) */
    uint64_t mask;             /* OBJ: candidate keys */
} gm_frame;

typedef struct gm_stack {
    int depth;
    gm_frame f[MK_GRAMMAR_MAX_DEPTH];
} gm_stack;

/* What a byte step changed, to take it back (the trie walk). */
typedef struct gm_undo {
    int depth;
    int n;
    int idx[2];
    gm_frame old[2];
} gm_undo;

/* automaton.c */
void gm_stack_init(const mk_grammar *g, gm_stack *s);
/* Feed byte c. False when rejected, s then unchanged. u records how to
 * take an accepted step back (gm_unstep). */
bool gm_step(const mk_grammar *g, gm_stack *s, uint8_t c, gm_undo *u);
void gm_unstep(gm_stack *s, const gm_undo *u);
bool gm_done(const mk_grammar *g, const gm_stack *s);
int64_t gm_fin(const mk_grammar *g, const gm_stack *s);
/* The top frame is inside a string with no escape or code point open. */
bool gm_in_plain_string(const mk_grammar *g, const gm_stack *s);

#endif
