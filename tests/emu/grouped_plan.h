// The routing and plan the grouped GEMM emulations share (grouped_q8_emu,
// grouped_split_emu): three experts, 2 of 3 per token (token t takes t % 3
// and (t % 3 + 1 + (t / 3) % 2) % 3, never equal), laid out as k_grp_plan
// lays them out: each expert's run of sorted rows (tok_of: the token of a
// sorted row, pair_of: its (token, slot) pair), cut into tiles of up to
// bm rows (GRP_BM unless given). The includer provides GRP_BM and int4 /
// make_int4.
#ifndef MK_TESTS_EMU_GROUPED_PLAN_H
#define MK_TESTS_EMU_GROUPED_PLAN_H

#include <cstdint>
#include <vector>

struct emu_plan {
    static constexpr int E = 3, k = 2;
    std::vector<int32_t> tok_of, pair_of;
    std::vector<int4> tiles;
    int first[E], cnt[E];
    explicit emu_plan(int64_t n, int bm = GRP_BM) {
        const int64_t P = n * k;
        std::vector<int> idx((size_t)P);
        for (int64_t t = 0; t < n; t++) {
            idx[(size_t)(t * k)] = (int)(t % 3);
            idx[(size_t)(t * k + 1)] = (int)((t % 3 + 1 + (t / 3) % 2) % 3);
        }
        for (int e = 0; e < E; e++) {
            first[e] = (int)tok_of.size();
            for (int64_t i = 0; i < P; i++)
                if (idx[(size_t)i] == e) {
                    tok_of.push_back((int32_t)(i / k));
                    pair_of.push_back((int32_t)i);
                }
            cnt[e] = (int)tok_of.size() - first[e];
            for (int r = 0; r < cnt[e]; r += bm)
                tiles.push_back(make_int4(e, first[e] + r, cnt[e] - r < bm ? cnt[e] - r : bm, 0));
        }
    }
};

#endif
