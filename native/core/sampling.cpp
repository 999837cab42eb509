// Token sampling (see sampling.h). Each stage means what llama.cpp's sampler of that
// name means (llama_sampler_* in src/llama-sampler.cpp); top-p and min-p see the
// temperature-1 distribution, because temperature comes after them in its default chain.
#include "core/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
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
  const bool penalise = n_recent > 0 && (cfg.repeat_penalty != 1.0f || cfg.frequency_penalty != 0.0f || cfg.presence_penalty != 0.0f);

  // Plain greedy (no bias, no penalty) is one pass over the logits: building the candidate
  // list first costs as much again on a large vocabulary, for every sequence of every step.
  if (cfg.temperature == 0.0f && cfg.logit_bias.empty() && !penalise) {
    // A branch-free first pass: the maximum, and whether every logit is below
    // +Infinity (false for NaN too). Then the first id holding the maximum.
    constexpr float kInf = std::numeric_limits<float>::infinity();
    float max_v = -kInf;
    bool below_inf = true;
    for (size_t i = 0; i < n; i++) {
      below_inf &= logits[i] < kInf;
      max_v = logits[i] > max_v ? logits[i] : max_v;
    }
    if (!below_inf) {
      for (size_t i = 0; i < n; i++)
        if (std::isnan(logits[i]) || logits[i] == kInf) bad("logit of token " + std::to_string(i) + " is " + (std::isnan(logits[i]) ? "NaN" : "+Infinity"));
    }
    if (max_v == -kInf) bad("every token is banned (all logits are -Infinity)");
    size_t best = 0;
    while (logits[best] != max_v) best++;
    return int32_t(best);
  }

  // Candidates in id order (cands[i].id == i until the first filter), bias added:
  // llama.cpp adds every entry, repeats included.
  std::vector<Candidate>& c = s.cands;
  c.resize(n);
  for (size_t i = 0; i < n; i++) {
    float v = logits[i];
    if (std::isnan(v) || v == std::numeric_limits<float>::infinity())
      bad("logit of token " + std::to_string(i) + " is " + (std::isnan(v) ? "NaN" : "+Infinity"));
    c[i] = Candidate{v, int32_t(i)};
  }
  for (const LogitBias& b : cfg.logit_bias) {
    float& l = c[size_t(b.token)].logit;
    l = std::min(l + b.bias, std::numeric_limits<float>::max());  // a finite sum may still overflow
  }

  // Penalties, as llama.cpp's penalties sampler: each distinct recent token once, with
  // its count: the repeat penalty scales towards less likely (divide a positive logit,
  // multiply a non-positive one), then count * frequency + presence is subtracted.
  if (penalise) {
    if (s.counts.size() < n) s.counts.resize(n, 0);
    for (int32_t i = 0; i < n_recent; i++) s.counts[size_t(recent[i])]++;
    for (int32_t i = 0; i < n_recent; i++) {
      size_t t = size_t(recent[i]);
      int32_t count = s.counts[t];
      if (count == 0) continue;  // already applied for an earlier repeat of this token
      s.counts[t] = 0;
      float& l = c[t].logit;
      l = l <= 0 ? l * cfg.repeat_penalty : l / cfg.repeat_penalty;
      l -= float(count) * cfg.frequency_penalty + cfg.presence_penalty;
    }
  }

  // Greedy: the first (lowest id) maximum, as llama.cpp's temperature-0 path keeps.
  size_t best = 0;
  for (size_t i = 1; i < n; i++)
    if (c[i].logit > c[best].logit) best = i;
  const double max_l = c[best].logit;  // every stage below keeps this token
  if (c[best].logit == -std::numeric_limits<float>::infinity()) bad("every token is banned (all logits are -Infinity)");
  if (cfg.temperature == 0.0f) return int32_t(best);

  // Larger logit first; equal logits by id, so results never depend on sort internals.
  auto before = [](const Candidate& a, const Candidate& b) { return a.logit > b.logit || (a.logit == b.logit && a.id < b.id); };
  bool sorted = false;

  // top-k
  if (cfg.top_k > 0 && size_t(cfg.top_k) < c.size()) {
    std::partial_sort(c.begin(), c.begin() + cfg.top_k, c.end(), before);
    c.resize(size_t(cfg.top_k));
    sorted = true;
  }

  // top-p over the temperature-1 softmax of what is left: the smallest best-first prefix
  // whose mass reaches p (at least one token).
  if (cfg.top_p < 1.0f) {
    auto weight = [max_l](const Candidate& x) { return std::exp(double(x.logit) - max_l); };
    double sum = 0;
    for (const Candidate& x : c) sum += weight(x);
    const double target = double(cfg.top_p) * sum;
    size_t keep;
    if (sorted) {
      keep = prefix_reaching(c, 0, c.size(), 0.0, target, weight);
    } else {
      // Weighted quickselect: find the cut without sorting the whole vocabulary, so a flat
      // distribution (a large kept set) costs O(n_vocab), not a full sort. [0, lo) is kept
      // (unordered) with mass `acc`; the cut lies in [lo, hi).
      size_t lo = 0, hi = c.size();
      double acc = 0;
      bool found = false;
      while (hi - lo > kTopPPrefix) {
        // Median of three as the pivot, moved to lo.
        size_t mid = lo + (hi - lo) / 2;
        if (before(c[mid], c[lo])) std::swap(c[mid], c[lo]);
        if (before(c[hi - 1], c[lo])) std::swap(c[hi - 1], c[lo]);
        if (before(c[hi - 1], c[mid])) std::swap(c[hi - 1], c[mid]);
        std::swap(c[lo], c[mid]);
        const Candidate pivot = c[lo];
        auto split = std::partition(c.begin() + lo + 1, c.begin() + hi, [&](const Candidate& x) { return before(x, pivot); });
        size_t p = size_t(split - c.begin()) - 1;
        std::swap(c[lo], c[p]);  // [lo, p) before the pivot, c[p] the pivot, (p, hi) after it
        double upper = 0;
        for (size_t i = lo; i < p; i++) upper += weight(c[i]);
        if (acc + upper >= target) {
          hi = p;
        } else if (acc + upper + weight(c[p]) >= target) {
          keep = p + 1;
          found = true;
          break;
        } else {
          acc += upper + weight(c[p]);
          lo = p + 1;
        }
      }
      if (!found) {
        std::sort(c.begin() + lo, c.begin() + hi, before);
        keep = prefix_reaching(c, lo, hi, acc, target, weight);
      }
    }
    c.resize(keep);
  }

  // min-p: keep p_i >= min_p * p_max, i.e. logit_i >= max + log(min_p).
  if (cfg.min_p > 0.0f) {
    float floor_l = float(max_l + std::log(double(cfg.min_p)));
    size_t out = 0;
    for (size_t i = 0; i < c.size(); i++)
      if (c[i].logit >= floor_l) c[out++] = c[i];
    c.resize(out);  // never empty: the maximum passes
  }

  // temperature, then the draw: the first candidate whose running weight exceeds u * total.
  double inv_t = 1.0 / double(cfg.temperature);
  s.probs.resize(c.size());
  double total = 0;
  for (size_t i = 0; i < c.size(); i++) {
    double w = std::exp((double(c[i].logit) - max_l) * inv_t);
    s.probs[i] = w;
    total += w;
  }
  double target = sampling_uniform(cfg.seed, position) * total;
  double cum = 0;
  size_t last_positive = 0;
  for (size_t i = 0; i < c.size(); i++) {
    if (s.probs[i] <= 0) continue;
    cum += s.probs[i];
    last_positive = i;
    if (cum > target) return c[i].id;
  }
  return c[last_positive].id;  // u * total rounded up to total
}

}  // namespace tdm
