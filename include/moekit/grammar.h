/* Constrained decoding: a JSON schema (or "any JSON object") compiled to a
 * pushdown automaton over bytes, and a token mask per generation step from
 * the tokenizer's vocabulary, so generated text always parses and
 * validates (OpenAI's response_format json_object / json_schema).
 *
 * Three objects:
 *   mk_grammar        a compiled schema: immutable, shared by any number of
 *                     sequences and threads;
 *   mk_grammar_vocab  the vocabulary as a byte trie (built once per
 *                     tokenizer, immutable, shared);
 *   mk_grammar_match  one sequence's automaton state and mask scratch (one
 *                     thread at a time).
 *
 * The output is compact JSON: no white space between tokens (unbounded
 * white space would let a model loop without ever finishing). Object keys
 * come in the schema's order. Numbers have at most 15 digits in each of
 * their integer and fraction parts and 2 in an exponent (so every
 * number is a finite double); nesting is at most
 * MK_GRAMMAR_MAX_DEPTH deep (deeper containers are refused byte by byte, so
 * an "any value" position then takes a scalar).
 *
 * Given a token budget, the mask also steers towards closing: a token is
 * allowed only when what it leaves can still be completed, plus the stop
 * token, in the tokens left (the shortest completion is counted in bytes,
 * one token each at worst; every byte is a token of the byte-level and
 * tiktoken vocabularies), so a sequence whose budget allows its shortest
 * completion at the start always ends complete and valid. A smaller budget
 * is steered straight towards closing (each token shortens the shortest
 * completion), which may or may not fit. */
#ifndef MOEKIT_GRAMMAR_H
#define MOEKIT_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moekit/status.h"
#include "moekit/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MK_GRAMMAR_MAX_DEPTH 32

typedef struct mk_grammar mk_grammar;
typedef struct mk_grammar_vocab mk_grammar_vocab;
typedef struct mk_grammar_match mk_grammar_match;

/* Any JSON object (response_format {"type": "json_object"}). */
mk_status mk_grammar_json_object(mk_grammar **out);

/* Compile a JSON schema given as JSON text json[0..len). Supported: type
 * (a name or an array of names: object, array, string, number, integer,
 * boolean, null), properties / required / additionalProperties (extra keys
 * are never generated, so any value of it is honoured), items,
 * minItems / maxItems, enum, const, anyOf (alternatives must differ in
 * their first byte: a string, a number, an object...), $ref to "#",
 * "#/$defs/NAME" or "#/definitions/NAME" (recursion allowed when a finite
 * instance exists), and annotations (title, description, default,
 * examples, $comment, $schema, $id, $defs, definitions, strict). With
 * `strict` (OpenAI's strict: true) every object must list all its
 * properties in `required` and set additionalProperties to false, as
 * OpenAI requires. Anything else (pattern, format, minLength, minimum,
 * oneOf, allOf, not, patternProperties, if/then/else, ...) is refused:
 * MK_E_UNSUPPORTED naming the keyword and its JSON path ("$.properties.
 * name.pattern"); a malformed schema is MK_E_ARG with the path. */
mk_status mk_grammar_compile_schema(const char *json, size_t len, bool strict, mk_grammar **out);
void mk_grammar_free(mk_grammar *g); /* NULL ok */

/* The vocabulary of tok (ids below vocab_size) as a byte trie. stop[0..n)
 * are the ids that end generation: allowed only where the JSON is
 * complete. Special tokens and ids without bytes are never allowed.
 * MK_E_UNSUPPORTED when the tokenizer has no fixed bytes per id. */
mk_status mk_grammar_vocab_create(const mk_tok *tok, int64_t vocab_size, const int32_t *stop, size_t n_stop,
                                  mk_grammar_vocab **out);
void mk_grammar_vocab_free(mk_grammar_vocab *v); /* NULL ok */
int64_t mk_grammar_vocab_size(const mk_grammar_vocab *v);

/* A sequence's matcher at the start of the text. g and v must outlive it. */
mk_status mk_grammar_match_create(const mk_grammar *g, const mk_grammar_vocab *v, mk_grammar_match **out);
void mk_grammar_match_free(mk_grammar_match *m); /* NULL ok */

/* dst takes src's state (both of the same grammar and vocabulary): a
 * speculative branch, a check of one token without changing src. */
void mk_grammar_match_copy(mk_grammar_match *dst, const mk_grammar_match *src);
/* Feed bytes: true and the state advanced when s[0..n) is a valid
 * continuation; false and the state unchanged otherwise. */
bool mk_grammar_match_bytes(mk_grammar_match *m, const char *s, size_t n);
/* Feed a sampled token (its bytes; a stop id only where complete).
 * MK_E_ARG (state unchanged) when the grammar does not allow it. */
mk_status mk_grammar_match_token(mk_grammar_match *m, int32_t id);
/* The text so far is a complete value (generation may stop here). */
bool mk_grammar_match_done(const mk_grammar_match *m);
/* Bytes of the shortest completion of the text so far. */
int64_t mk_grammar_match_min_left(const mk_grammar_match *m);

/* The ids allowed next, as bits (bit i of bits[i / 64]; (vocab + 63) / 64
 * words, written whole). budget: tokens that may still be generated,
 * this one included; <= 0: no steering; smaller than the shortest
 * completion in bytes + 1 (the stop token): each allowed token must
 * shorten the shortest completion (best effort: closing is then likely,
 * with tokens of several bytes, not guaranteed). Returns how many ids are
 * allowed (0 only when the text cannot go on, which a matcher fed through
 * its own masks never reaches). */
int64_t mk_grammar_match_allowed(mk_grammar_match *m, int64_t budget, uint64_t *bits);
/* mk_grammar_match_allowed applied to logits[vocab]: forbidden ids become
 * -INFINITY. When nothing is allowed (never, see above) the stop ids stay
 * so generation ends. */
void mk_grammar_match_mask(mk_grammar_match *m, int64_t budget, float *logits, int64_t vocab);

#ifdef __cplusplus
}
#endif
#endif
