# Shared by bench/serve_bench.sh and bench/serve_cache_bench.sh: time one
# streamed request the same way for moekit serve and llama-server.
#
#   sse_time URL BODY [ANSWER_FILE]
#
# POSTs BODY (which must ask for "stream": true and
# "stream_options": {"include_usage": true}) with curl and reads the SSE
# lines in one perl process that stamps each line as it arrives (no fork
# per chunk: the old serve_bench.sh loop forked `date` for every chunk,
# processes that compete with the server's compute threads on a 2-core
# machine, and its stamps measure the reader once it falls behind; it gave
# 71 tok/s for a server whose aggregate at one stream was 158 in the same
# run). Tokens come from the usage chunk, not from the chunk count. Prints
# one line of key=value:
#   ttft_s        from just before the request to the first chunk with
#                 content (text or delta.content; chat's role-only first
#                 chunk does not count)
#   decode_s      from the first to the last content chunk
#   chunks        content chunks
#   prompt_tokens, completion_tokens   from the final usage chunk
#   cached_tokens usage.prompt_tokens_details.cached_tokens (moekit), or
#                 timings.cache_n (llama-server); -1 when neither is sent
#   processed     prompt tokens the server read: timings.prompt_n
#                 (llama-server), else prompt_tokens - cached_tokens
#   tok_s         (completion_tokens - 1) / decode_s: the first content
#                 chunk holds the first token (the reader keeps up, so each
#                 chunk is one token), the rest arrive over decode_s
# With ANSWER_FILE, the concatenated content, still JSON-escaped (ready to
# paste into a JSON string: the next turn's assistant message), goes there.
sse_time() {
    local url=$1 body=$2 ans=${3:-/dev/null}
    curl -sN "$url" -H 'Content-Type: application/json' -d "$body" | ANS="$ans" perl -e '
        use strict; use warnings; use Time::HiRes qw(time);
        my $t0 = time; my ($f, $l, $c, $pt, $ct, $cached, $pn) = (undef, undef, 0, -1, -1, -1, -1);
        my $text = "";
        while (my $line = <STDIN>) {
            my $t = time;
            next unless $line =~ /^data: (\{.*)/;
            my $d = $1;
            # the first content or text string of the chunk, non-empty
            if ($d =~ /"(?:content|text)":"((?:[^"\\]|\\.)+)"/) {
                $c++; $f //= $t; $l = $t; $text .= $1;
            }
            $pt = $1 if $d =~ /"prompt_tokens":(\d+)/;
            $ct = $1 if $d =~ /"completion_tokens":(\d+)/;
            $cached = $1 if $d =~ /"cached_tokens":(\d+)/;
            $cached = $1 if $d =~ /"cache_n":(\d+)/;
            $pn = $1 if $d =~ /"prompt_n":(\d+)/;
        }
        open(my $a, ">", $ENV{ANS}) or die "sse_time: $ENV{ANS}: $!"; print $a $text; close $a;
        my $proc = $pn >= 0 ? $pn : ($pt >= 0 && $cached >= 0 ? $pt - $cached : -1);
        my $ds = defined $f ? $l - $f : 0;
        printf "ttft_s=%.4f decode_s=%.4f chunks=%d prompt_tokens=%d completion_tokens=%d cached_tokens=%d processed=%d tok_s=%.1f\n",
            (defined $f ? $f - $t0 : -1), $ds, $c, $pt, $ct, $cached, $proc, ($ds > 0 && $ct > 1 ? ($ct - 1) / $ds : 0);
    '
}

# The value of key K in a key=value line.
kv() { tr ' ' '\n' | sed -n "s/^$1=//p"; }

# Wait until URL/health answers 200 (both servers), up to S seconds; false
# when PID exits first.
wait_health() {
    local url=$1 pid=$2 s=${3:-600} i
    for i in $(seq $((s * 10))); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/health")" = 200 ] && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
