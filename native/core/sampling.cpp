// Token sampling (see sampling.h). Each stage means what llama.cpp's sampler of that
// name means (llama_sampler_* in src/llama-sampler.cpp); top-p and min-p see the
// temperature-1 distribution, because temperature comes after them in its default chain.
#include "core/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>

#include "core/error.h"

namespace tdm {

namespace {

[[noreturn]] void bad(const std::string& what) { throw Error(code::bad_argument, "sampling: " + what); }

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// splitmix64's increment and finaliser: a bijective mix with good avalanche, so
// hashing (seed, position) gives independent-looking variates without any state.
uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Below this many candidates top-p simply sorts what is left of its search range.
constexpr size_t kTopPPrefix = 256;

// In c[lo, hi), sorted best first, after a kept prefix of mass `acc`: the end of the
// shortest prefix whose running mass reaches `target` (hi when none does, by rounding).
template <typename Weight>
size_t prefix_reaching(const std::vector<Candidate>& c, size_t lo, size_t hi, double acc, double target, Weight weight) {
  for (size_t i = lo; i < hi; i++) {
    acc += weight(c[i]);
    if (acc >= target) return i + 1;
  }
  return hi;
}

constexpr float kInf = std::numeric_limits<float>::infinity();

// Four floats as one value, for the passes over a whole vocabulary: GCC's vector extensions
// give SSE2 on x86-64 and NEON on arm64, both baseline, so no processor check is needed.
typedef float F4 __attribute__((vector_size(16)));
typedef int32_t I4 __attribute__((vector_size(16)));

inline F4 load4(const float* p) {
  F4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline bool any4(I4 m) { return (m[0] | m[1] | m[2] | m[3]) != 0; }

// e^x for x <= 0, within about 2e-7 relative: Cody-Waite reduction to |r| <= ln2/2 and
// Taylor terms to r^7, scaled by 2^n through the exponent bits. Below -87 (e^-87 is about
// 1.6e-38, which no sum over a vocabulary notices) it is 0, so that a banned token
// (-Infinity) weighs nothing.
inline F4 exp_nonpos(F4 x) {
  const I4 kept = x >= -87.0f;
  x = kept ? x : F4{} - 87.0f;
  const F4 n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  F4 r = x - n * 0.693359375f;
  r = r - n * -2.12194440054690583e-4f;
  F4 p = F4{} + 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const I4 bits = (__builtin_convertvector(n, I4) + 127) << 23;
  return kept ? p * (F4)bits : F4{};
}

inline float exp_nonpos(float x) { return exp_nonpos(F4{} + x)[0]; }

// Weights in blocks of this many tokens, each with its sum, so that the draw over a whole
// vocabulary skips a block with one comparison.
constexpr size_t kWeightBlock = 64;

// w[i] = e^((x[i] - max) * inv_t) for i < n, and block_sum[b] = the sum of block b's weights
// (four interleaved double sums, added pairwise); returns the blocks' sums added in order.
double weights(const float* x, size_t n, float max, float inv_t, float* w, std::vector<double>& block_sum) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const F4 v = exp_nonpos((load4(x + i) - max) * inv_t);
    std::memcpy(w + i, &v, sizeof v);
  }
  for (; i < n; i++) w[i] = exp_nonpos((x[i] - max) * inv_t);
  block_sum.resize((n + kWeightBlock - 1) / kWeightBlock);
  double total = 0;
  for (size_t b = 0; b < block_sum.size(); b++) {
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    const size_t end = std::min(n, (b + 1) * kWeightBlock);
    size_t j = b * kWeightBlock;
    for (; j + 4 <= end; j += 4) {
      a0 += double(w[j]);
      a1 += double(w[j + 1]);
      a2 += double(w[j + 2]);
      a3 += double(w[j + 3]);
    }
    for (; j < end; j++) a0 += double(w[j]);
    block_sum[b] = (a0 + a1) + (a2 + a3);
    total += block_sum[b];
  }
  return total;
}

// The largest value of x[0, n), its first index, and whether every value is below +Infinity
// (false for NaN), in one pass: each lane keeps its first maximum (it moves only to a larger
// value), and the lowest index among the lanes that hold the maximum wins.
float scan_max(const float* x, size_t n, size_t* first, bool* all_below_inf) {
  F4 m0 = F4{} - kInf, m1 = m0;
  I4 at0 = I4{} + 0, at1 = at0;
  const I4 lane = {0, 1, 2, 3};
  I4 ok = I4{} - 1;
  size_t i = 0;
  for (; i + 8 <= n && i + 8 <= size_t(INT32_MAX); i += 8) {
    const F4 a = load4(x + i), b = load4(x + i + 4);
    const I4 ga = a > m0, gb = b > m1;
    m0 = ga ? a : m0;
    m1 = gb ? b : m1;
    at0 = ga ? lane + int32_t(i) : at0;
    at1 = gb ? lane + int32_t(i + 4) : at1;
    ok &= (a < kInf) & (b < kInf);
  }
  float max_v = -kInf;
  for (int k = 0; k < 4; k++) max_v = std::max({max_v, m0[k], m1[k]});
  size_t best = n;
  for (int k = 0; k < 4; k++) {
    if (m0[k] == max_v) best = std::min(best, size_t(at0[k]));
    if (m1[k] == max_v) best = std::min(best, size_t(at1[k]));
  }
  bool below = ok[0] && ok[1] && ok[2] && ok[3];
  for (; i < n; i++) {
    if (x[i] > max_v) {
      max_v = x[i];
      best = i;
    }
    below = below && x[i] < kInf;
  }
  *first = best == n ? 0 : best;  // all -Infinity (or NaN): the caller rejects the row
  *all_below_inf = below;
  return max_v;
}

// Larger logit first; equal logits by id, so results never depend on sort internals.
inline bool before(const Candidate& a, const Candidate& b) { return a.logit > b.logit || (a.logit == b.logit && a.id < b.id); }

// The k best of x[0, n) (k < n) by `before`, best first: a heap of the k best so far whose
// worst is the bar; blocks of 16 with nothing above the bar are skipped after one vector test
// (later ids lose ties, so only a larger logit enters).
void top_k(const float* x, size_t n, size_t k, std::vector<Candidate>& out) {
  out.resize(k);
  for (size_t i = 0; i < k; i++) out[i] = Candidate{x[i], int32_t(i)};
  std::make_heap(out.begin(), out.end(), before);  // out.front() is the worst kept
  float bar = out.front().logit;
  constexpr size_t L = 16;
  auto offer = [&](size_t i) {
    if (!(x[i] > bar)) return;
    std::pop_heap(out.begin(), out.end(), before);
    out.back() = Candidate{x[i], int32_t(i)};
    std::push_heap(out.begin(), out.end(), before);
    bar = out.front().logit;
  };
  size_t i = k;
  for (; i + L <= n; i += L) {
    const I4 above = (load4(x + i) > bar) | (load4(x + i + 4) > bar) | (load4(x + i + 8) > bar) | (load4(x + i + 12) > bar);
    if (any4(above))
      for (size_t j = 0; j < L; j++) offer(i + j);
  }
  for (; i < n; i++) offer(i);
  std::sort_heap(out.begin(), out.end(), before);
}

// The tokens with x >= floor, in id order; blocks of 16 with none are skipped after one vector test.
void collect_above(const float* x, size_t n, float floor, std::vector<Candidate>& out) {
  out.clear();
  constexpr size_t L = 16;
  size_t i = 0;
  for (; i + L <= n; i += L) {
    const I4 hit = (load4(x + i) >= floor) | (load4(x + i + 4) >= floor) | (load4(x + i + 8) >= floor) | (load4(x + i + 12) >= floor);
    if (any4(hit))
      for (size_t j = i; j < i + L; j++)
        if (x[j] >= floor) out.push_back(Candidate{x[j], int32_t(j)});
  }
  for (; i < n; i++)
    if (x[i] >= floor) out.push_back(Candidate{x[i], int32_t(i)});
}

// The length of the shortest best-first prefix of c whose weights (w by token id) reach
// target, c.size() when none does; c[0, that length) then holds that prefix, in no particular
// order. A weighted quickselect: the cut without sorting, so that a flat distribution (a large
// kept set) costs O(c.size()), not a sort.
size_t top_p_cut(std::vector<Candidate>& c, const float* w, double target) {
  // [0, lo) is kept (unordered) with mass `acc`; the cut lies in [lo, hi).
  auto weight = [w](const Candidate& a) { return double(w[a.id]); };
  size_t lo = 0, hi = c.size();
  double acc = 0;
  while (hi - lo > kTopPPrefix) {
    // Median of three as the pivot, moved to lo.
    size_t mid = lo + (hi - lo) / 2;
    if (before(c[mid], c[lo])) std::swap(c[mid], c[lo]);
    if (before(c[hi - 1], c[lo])) std::swap(c[hi - 1], c[lo]);
    if (before(c[hi - 1], c[mid])) std::swap(c[hi - 1], c[mid]);
    std::swap(c[lo], c[mid]);
    const Candidate pivot = c[lo];
    auto split = std::partition(c.begin() + lo + 1, c.begin() + hi, [&](const Candidate& a) { return before(a, pivot); });
    size_t p = size_t(split - c.begin()) - 1;
    std::swap(c[lo], c[p]);  // [lo, p) before the pivot, c[p] the pivot, (p, hi) after it
    double upper = 0;
    for (size_t i = lo; i < p; i++) upper += weight(c[i]);
    if (acc + upper >= target) {
      hi = p;
    } else if (acc + upper + weight(c[p]) >= target) {
      return p + 1;
    } else {
      acc += upper + weight(c[p]);
      lo = p + 1;
    }
  }
  std::sort(c.begin() + lo, c.begin() + hi, before);
  return prefix_reaching(c, lo, hi, acc, target, weight);
}

// The sum of w[i] over the tokens with x[i] >= floor, in four interleaved double sums.
double mass_above(const float* x, const float* w, size_t n, float floor) {
  double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a0 += x[i] >= floor ? double(w[i]) : 0.0;
    a1 += x[i + 1] >= floor ? double(w[i + 1]) : 0.0;
    a2 += x[i + 2] >= floor ? double(w[i + 2]) : 0.0;
    a3 += x[i + 3] >= floor ? double(w[i + 3]) : 0.0;
  }
  for (; i < n; i++) a0 += x[i] >= floor ? double(w[i]) : 0.0;
  return (a0 + a1) + (a2 + a3);
}

// sample_token's `penalise`: the penalties change some logit only with recent tokens and a
// penalty that is not the identity.
bool penalises(const SamplingConfig& cfg, int32_t n_recent) {
  return n_recent > 0 && (cfg.repeat_penalty != 1.0f || cfg.frequency_penalty != 0.0f || cfg.presence_penalty != 0.0f);
}

// min-p's bar as a logit: p_i >= min_p * p_max is logit_i >= max + log(min_p); -Infinity when off.
float min_p_floor(const SamplingConfig& cfg, float max_v) {
  return cfg.min_p > 0.0f ? float(double(max_v) + std::log(double(cfg.min_p))) : -kInf;
}

// Temperature, then the draw from the candidates c (never empty), whose best logit is max_v:
// the first candidate whose running weight exceeds u * total.
int32_t draw(const std::vector<Candidate>& c, float max_v, const SamplingConfig& cfg, uint64_t position, std::vector<double>& probs) {
  const float inv_t = float(1.0 / double(cfg.temperature));
  probs.resize(c.size());
  double total = 0;
  for (size_t i = 0; i < c.size(); i++) total += (probs[i] = exp_nonpos((c[i].logit - max_v) * inv_t));
  const double target = sampling_uniform(cfg.seed, position) * total;
  double cum = 0;
  size_t last_positive = 0;
  for (size_t i = 0; i < c.size(); i++) {
    if (probs[i] <= 0) continue;
    cum += probs[i];
    last_positive = i;
    if (cum > target) return c[i].id;
  }
  return c[last_positive].id;  // u * total rounded up to total
}

// The stages after top-k, over its candidates c (best first) from a row whose largest logit is
// max_v: top-p, min-p, temperature, the draw. sample_token and sample_from_best both end here,
// so that they draw the same token.
int32_t sample_after_top_k(std::vector<Candidate>& c, float max_v, const SamplingConfig& cfg, uint64_t position, SamplerScratch& s) {
  // top-p over the temperature-1 softmax of the k: the shortest best-first prefix whose mass
  // reaches p (at least one token).
  if (cfg.top_p < 1.0f) {
    s.probs.resize(c.size());
    double sum = 0;
    for (size_t i = 0; i < c.size(); i++) sum += (s.probs[i] = exp_nonpos(c[i].logit - max_v));
    const double target = double(cfg.top_p) * sum;
    double acc = 0;
    size_t keep = c.size();
    for (size_t i = 0; i < c.size(); i++) {
      acc += s.probs[i];
      if (acc >= target) {
        keep = i + 1;
        break;
      }
    }
    c.resize(keep);
  }
  // min-p (never empty: the maximum passes).
  if (cfg.min_p > 0.0f) {
    const float floor_l = min_p_floor(cfg, max_v);
    size_t out = 0;
    for (size_t i = 0; i < c.size(); i++)
      if (c[i].logit >= floor_l) c[out++] = c[i];
    c.resize(out);
  }
  return draw(c, max_v, cfg, position, s.probs);
}

// How many best logits the chain needs before best_logits_needed's limits: 1 for greedy,
// top_k for a top-k chain, 0 when a stage before top-k changes the row or there is no top-k.
int32_t best_needed(const SamplingConfig& cfg, int32_t n_recent) {
  if (!cfg.logit_bias.empty() || !cfg.allowed.empty() || penalises(cfg, n_recent)) return 0;
  return cfg.temperature == 0.0f ? 1 : std::max(cfg.top_k, 0);
}

}  // namespace

double sampling_uniform(uint64_t seed, uint64_t position) {
  uint64_t bits = splitmix64(splitmix64(seed) ^ position);
  return double(bits >> 11) * (1.0 / 9007199254740992.0);  // 2^-53
}

void validate_sampling_config(const SamplingConfig& cfg, int32_t n_vocab) {
  if (n_vocab <= 0) bad("n_vocab must be positive, got " + std::to_string(n_vocab));
  if (!std::isfinite(cfg.temperature) || cfg.temperature < 0)
    bad("temperature must be a finite number >= 0, got " + num(cfg.temperature));
  if (cfg.top_k < 0) bad("topK must be >= 0, got " + std::to_string(cfg.top_k));
  if (!(cfg.top_p > 0 && cfg.top_p <= 1)) bad("topP must be in (0, 1], got " + num(cfg.top_p));
  if (!(cfg.min_p >= 0 && cfg.min_p <= 1)) bad("minP must be in [0, 1], got " + num(cfg.min_p));
  if (!std::isfinite(cfg.repeat_penalty) || cfg.repeat_penalty <= 0)
    bad("repeatPenalty must be a finite number > 0, got " + num(cfg.repeat_penalty));
  if (!std::isfinite(cfg.presence_penalty)) bad("presencePenalty must be finite");
  if (!std::isfinite(cfg.frequency_penalty)) bad("frequencyPenalty must be finite");
  if (!cfg.allowed.empty() && cfg.allowed.size() != (size_t(n_vocab) + 7) / 8)
    bad("the allowed-token mask has " + std::to_string(cfg.allowed.size()) + " bytes; a vocabulary of " + std::to_string(n_vocab) +
        " needs " + std::to_string((size_t(n_vocab) + 7) / 8));
  for (const LogitBias& b : cfg.logit_bias) {
    if (b.token < 0 || b.token >= n_vocab)
      bad("logitBias token " + std::to_string(b.token) + " is outside the vocabulary [0, " + std::to_string(n_vocab) + ")");
    if (std::isnan(b.bias) || b.bias == std::numeric_limits<float>::infinity())
      bad("logitBias for token " + std::to_string(b.token) + " must be finite or -Infinity");
  }
}

int32_t sample_token(const float* logits, int32_t n_vocab, const SamplingConfig& cfg, const int32_t* recent,
                     int32_t n_recent, uint64_t position, SamplerScratch& s) {
  validate_sampling_config(cfg, n_vocab);
  if (!logits) bad("logits is null");
  if (n_recent < 0 || (n_recent > 0 && !recent)) bad("recent tokens are missing");
  for (int32_t i = 0; i < n_recent; i++) {
    if (recent[i] < 0 || recent[i] >= n_vocab)
      bad("recent token " + std::to_string(recent[i]) + " is outside the vocabulary [0, " + std::to_string(n_vocab) + ")");
  }
  const size_t n = size_t(n_vocab);
  const bool penalise = penalises(cfg, n_recent);

  bool below_inf = true;
  size_t best = 0;
  float max_v = scan_max(logits, n, &best, &below_inf);
  if (!below_inf) {
    for (size_t i = 0; i < n; i++)
      if (std::isnan(logits[i]) || logits[i] == kInf) bad("logit of token " + std::to_string(i) + " is " + (std::isnan(logits[i]) ? "NaN" : "+Infinity"));
  }

  // The logits every stage sees: the row itself, or a copy with the bias and penalties applied.
  const float* x = logits;
  if (!cfg.logit_bias.empty() || penalise || !cfg.allowed.empty()) {
    s.work.assign(logits, logits + n);
    // llama.cpp adds every bias entry, repeats included.
    for (const LogitBias& b : cfg.logit_bias) {
      float& l = s.work[size_t(b.token)];
      l = std::min(l + b.bias, std::numeric_limits<float>::max());  // a finite sum may still overflow
    }
    // Penalties, as llama.cpp's penalties sampler: each distinct recent token once, with its
    // count: the repeat penalty scales towards less likely (divide a positive logit, multiply a
    // non-positive one), then count * frequency + presence is subtracted.
    if (penalise) {
      if (s.counts.size() < n) s.counts.resize(n, 0);
      for (int32_t i = 0; i < n_recent; i++) s.counts[size_t(recent[i])]++;
      for (int32_t i = 0; i < n_recent; i++) {
        const size_t t = size_t(recent[i]);
        const int32_t count = s.counts[t];
        if (count == 0) continue;  // already applied for an earlier repeat of this token
        s.counts[t] = 0;
        float& l = s.work[t];
        l = l <= 0 ? l * cfg.repeat_penalty : l / cfg.repeat_penalty;
        l -= float(count) * cfg.frequency_penalty + cfg.presence_penalty;
      }
    }
    for (size_t i = 0; i < cfg.allowed.size(); i++) {
      const uint8_t bits = cfg.allowed[i];
      if (bits == 0xff) continue;
      for (size_t t = i * 8; t < std::min(n, i * 8 + 8); t++)
        if ((bits >> (t - i * 8) & 1) == 0) s.work[t] = -kInf;
    }
    x = s.work.data();
    max_v = scan_max(x, n, &best, &below_inf);
  }
  if (max_v == -kInf) bad(cfg.allowed.empty() ? "every token is banned (all logits are -Infinity)"
                                              : "no allowed token has a finite logit");

  // Greedy: the first (lowest id) maximum, as llama.cpp's temperature-0 path keeps.
  if (cfg.temperature == 0.0f) return int32_t(best);

  // The candidates each stage leaves, with (where a stage needs them) their temperature-1
  // weights e^(logit - max) in s.probs, same order. Every stage keeps the maximum.
  std::vector<Candidate>& c = s.cands;
  if (cfg.top_k > 0 && size_t(cfg.top_k) < n) {
    top_k(x, n, size_t(cfg.top_k), c);
    return sample_after_top_k(c, max_v, cfg, position, s);
  }
  const float floor_l = min_p_floor(cfg, max_v);
  if (cfg.top_p < 1.0f) {
    // top-p over the whole vocabulary: its mass target needs every weight, its cut only the
    // best-first order down to it.
    s.weights.resize(n);
    const double target = double(cfg.top_p) * weights(x, n, max_v, 1.0f, s.weights.data(), s.block_sums);
    const float* w = s.weights.data();
    // min-p comes next and keeps only logits >= floor, a best-first prefix too, so the kept
    // set is the shorter of the two prefixes: only the tokens above the floor are searched
    // (all of them stay when their mass falls short of the target). Likewise, when the tokens
    // within a factor 1e-4 of the top weight already hold the target mass, the cut lies among them.
    float search_floor = floor_l;
    const float tail = max_v - 9.21034037f;  // ln(1e-4)
    if (tail > floor_l && mass_above(x, w, n, tail) >= target) search_floor = tail;
    collect_above(x, n, search_floor, c);
    c.resize(top_p_cut(c, w, target));
  } else if (cfg.min_p > 0.0f) {
    collect_above(x, n, floor_l, c);
  } else {
    // Temperature alone: every token, in id order, without a candidate list. The draw adds
    // whole blocks' sums until the block holding u * total, then its weights one by one.
    s.weights.resize(n);
    const float* w = s.weights.data();
    const double total = weights(x, n, max_v, float(1.0 / double(cfg.temperature)), s.weights.data(), s.block_sums);
    const double target = sampling_uniform(cfg.seed, position) * total;
    double cum = 0;
    for (size_t b = 0; b < s.block_sums.size(); b++) {
      if (cum + s.block_sums[b] <= target) {
        cum += s.block_sums[b];
        continue;
      }
      double in = cum;
      const size_t end = std::min(n, (b + 1) * kWeightBlock);
      for (size_t i = b * kWeightBlock; i < end; i++) {
        in += double(w[i]);
        if (w[i] > 0 && in > target) return int32_t(i);
      }
      cum += s.block_sums[b];  // the block's own sum and its running sum differ in rounding
    }
    // u * total rounded up to total: the last token with a weight.
    size_t last = n - 1;
    while (last > 0 && w[last] <= 0) last--;
    return int32_t(last);
  }

  // min-p was applied above, by the floor the candidates were collected from.
  return draw(c, max_v, cfg, position, s.probs);
}

int32_t best_logits_needed(const SamplingConfig& cfg, int32_t n_recent, int32_t n_vocab, int32_t max_k) {
  const int32_t needed = best_needed(cfg, n_recent);
  // top_k >= n_vocab keeps every token: sample_token then takes a path over the whole row.
  if (cfg.temperature != 0.0f && needed >= n_vocab) return 0;
  return needed <= max_k ? needed : 0;
}

int32_t sample_from_best(const Candidate* best, int32_t k, const SamplingConfig& cfg, uint64_t position, SamplerScratch& s) {
  if (!best) bad("the best logits are null");
  if (!cfg.logit_bias.empty() || !cfg.allowed.empty())
    bad("a logit bias or an allowed set changes the row before its best are picked: sample from the whole row");
  validate_sampling_config(cfg, std::numeric_limits<int32_t>::max());  // with no bias or mask, nothing in it depends on the vocabulary
  const int32_t needed = best_needed(cfg, 0);
  if (needed == 0) bad("sampling at temperature > 0 without top-k needs the whole row, not its best logits");
  if (k < needed) bad("this config needs the " + std::to_string(needed) + " best logits, got " + std::to_string(k));
  // What sample_token rejects in the row, as far as the candidates show it (a device's
  // top_k_rows flags such rows for the caller instead).
  for (int32_t i = 0; i < needed; i++) {
    if (std::isnan(best[i].logit) || best[i].logit == kInf)
      bad("logit of token " + std::to_string(best[i].id) + " is " + (std::isnan(best[i].logit) ? "NaN" : "+Infinity"));
    if (i > 0 && !before(best[i - 1], best[i])) bad("the best logits are not sorted best first at " + std::to_string(i));
  }
  if (best[0].logit == -kInf) bad("every token is banned (all logits are -Infinity)");

  if (cfg.temperature == 0.0f) return best[0].id;
  s.cands.assign(best, best + needed);
  return sample_after_top_k(s.cands, best[0].logit, cfg, position, s);
}

}  // namespace tdm
