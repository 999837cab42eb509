// Token sampling from one row of logits, next to where the logits are computed.
// Order, as llama.cpp's default chain (common/sampling.cpp) minus the samplers tandem does
// not offer (DRY, top-n-sigma, typical, XTC): logit bias -> penalties -> allowed set (a
// constraint such as JSON mode, as llama.cpp's grammar) -> top-k -> top-p -> min-p ->
// temperature -> draw. Temperature 0 is greedy: the argmax after bias, penalties and the
// allowed set.
#pragma once
#include <cstdint>
#include <vector>

namespace tdm {

// Added to one token's logit before anything else; -INFINITY bans the token.
struct LogitBias {
  int32_t token;  // token id, 0 <= token < n_vocab
  float bias;     // finite or -INFINITY
};

// Mirrors SamplingParams in src/native/step-plan.ts; the defaults disable every stage.
struct SamplingConfig {
  float temperature = 0.0f;        // 0 = greedy (argmax); otherwise > 0
  int32_t top_k = 0;               // keep the k largest logits; 0 disables
  float top_p = 1.0f;              // keep the smallest prefix whose probability reaches p; 1 disables
  float min_p = 0.0f;              // drop tokens with p < min_p * p_max; 0 disables
  float repeat_penalty = 1.0f;     // llama.cpp's repeat penalty over the recent tokens; 1 disables
  float presence_penalty = 0.0f;   // subtracted once from each recent token's logit; 0 disables
  float frequency_penalty = 0.0f;  // subtracted per occurrence in the recent tokens; 0 disables
  std::vector<LogitBias> logit_bias;
  // Bit t (byte t / 8, bit t % 8) set: token t may be drawn; empty: every token may. When set,
  // it covers the whole vocabulary.
  std::vector<uint8_t> allowed;
  uint64_t seed = 0;               // with the position, fixes the draw: no hidden RNG state
};

// One token still in the running, with its logit after bias and penalties.
struct Candidate {
  float logit;
  int32_t id;
};

// Buffers reused across calls (one per thread) so that sampling does not allocate per token.
struct SamplerScratch {
  std::vector<Candidate> cands;  // surviving candidates (contiguous: sorting them is cache-friendly)
  std::vector<double> probs;     // unnormalised weight per surviving candidate, same order
  std::vector<float> work;       // the logits with bias and penalties applied, when there are any
  std::vector<float> weights;    // unnormalised weight per token id, where a stage needs them all
  std::vector<double> block_sums;  // sums of consecutive blocks of those weights
  std::vector<int32_t> counts;   // occurrences in the recent tokens, by token id (kept all-zero between calls)
  std::vector<Candidate> best;   // a row's best as a device picked them (the executor's, for sample_from_best)
};

// Throws tdm::Error(TDM_BAD_ARGUMENT) naming the first parameter out of range.
void validate_sampling_config(const SamplingConfig& cfg, int32_t n_vocab);

// Samples one token id from `logits` (n_vocab floats). `recent` (n_recent ids, any order)
// are the tokens the penalties look at. The draw is a pure function of (cfg.seed, position).
// Throws tdm::Error(TDM_BAD_ARGUMENT) for bad parameters, a NaN logit, an out-of-range
// recent token, or when every token is banned.
int32_t sample_token(const float* logits, int32_t n_vocab, const SamplingConfig& cfg, const int32_t* recent,
                     int32_t n_recent, uint64_t position, SamplerScratch& scratch);

// How many of a row's best logits sample_token needs for this config, or 0 when it needs the
// whole row: 1 for greedy, top_k for a top-k chain, in both cases only with no logit bias, no
// active penalty over the n_recent recent tokens and no allowed set (they change the row
// before its best are picked). At most max_k (0 above it).
int32_t best_logits_needed(const SamplingConfig& cfg, int32_t n_recent, int32_t n_vocab, int32_t max_k);

// sample_token's token for a row given only its k best logits (k >= best_logits_needed(cfg,
// ...) > 0), best first by (larger logit, then lower id), as top_k_rows gives them: the same
// token sample_token would draw from the whole row at (seed, position). It cannot see the
// recent tokens: the caller rules out penalties through best_logits_needed. Throws
// tdm::Error(TDM_BAD_ARGUMENT) for a config that needs the whole row, k below what it needs,
// or candidates that are null, out of order, NaN, +Infinity or all -Infinity.
int32_t sample_from_best(const Candidate* best, int32_t k, const SamplingConfig& cfg, uint64_t position, SamplerScratch& scratch);

// The uniform variate in [0, 1) that the draw at (seed, position) uses: splitmix64's
// finaliser over the pair, 53 bits of mantissa. Exposed for tests.
double sampling_uniform(uint64_t seed, uint64_t position);

}  // namespace tdm
