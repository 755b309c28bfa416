/* GPT-2's byte <-> unicode table (bytes_to_unicode), used by ByteLevel
 * pre-tokenizers and decoders.
 *
 * Byte-level BPE vocabularies cannot hold raw bytes (control characters,
 * spaces, half code points), so every byte is first replaced by a printable
 * character: the 188 bytes that are printable Latin-1 ('!'..'~', 0xA1..0xAC,
 * 0xAE..0xFF) stand for themselves and the other 68 take U+0100, U+0101, ...
 * in byte order (space -> U+0120 'Ġ', newline -> U+010A 'Ċ'). The table is
 * built once, on first use, under pthread_once. */
#include <pthread.h>

#include "tokenizer/tok_impl.h"

static char g_chr[256][2];
static uint8_t g_len[256];
static int16_t g_inv[0x144]; /* code point -> byte; every mapped cp is < 0x144 */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static bool printable(int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); }

static void build(void) {
    for (int i = 0; i < 0x144; i++)
        g_inv[i] = -1;
    uint32_t extra = 256;
    for (int b = 0; b < 256; b++) {
        uint32_t cp = printable(b) ? (uint32_t)b : extra++;
        char tmp[4];
        g_len[b] = (uint8_t)tok_utf8_encode(cp, tmp);
        g_chr[b][0] = tmp[0];
        g_chr[b][1] = tmp[1];
        g_inv[cp] = (int16_t)b;
    }
}

const char *tok_bl_char(uint8_t b, size_t *len) {
    pthread_once(&g_once, build);
    *len = g_len[b];
    return g_chr[b];
}

int tok_bl_byte(uint32_t cp) {
    pthread_once(&g_once, build);
    return cp < 0x144 ? g_inv[cp] : -1;
}
