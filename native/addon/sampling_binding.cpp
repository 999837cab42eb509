// Test-only JS face of native sampling: sampleLogits(logits, params, recent, position)
// runs core/sampling.h on one row so tests can check it, and sampleLogitsFromBest does the
// same from the row's k best logits; the executor calls C++ directly.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "addon/napi_util.h"
#include "core/sampling.h"

namespace tdm::addon {

namespace {

constexpr double kMaxSafeInteger = 9007199254740991.0;  // 2^53 - 1

double field_number(const Napi::Object& o, const char* name) {
  Napi::Value v = o.Get(name);
  if (!v.IsNumber()) bad_arg(std::string("sampling params.") + name + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

uint64_t safe_uint(double v, const std::string& what) {
  if (!(v >= 0 && v <= kMaxSafeInteger) || v != std::floor(v)) bad_arg(what + " must be a non-negative integer up to 2^53-1");
  return uint64_t(v);
}

SamplingConfig parse_params(const Napi::Value& value) {
  if (!value.IsObject()) bad_arg("sampling params must be an object");
  Napi::Object o = value.As<Napi::Object>();
  SamplingConfig c;
  c.temperature = float(field_number(o, "temperature"));
  double top_k = field_number(o, "topK");
  if (!(top_k >= 0 && top_k <= 2147483647.0) || top_k != std::floor(top_k)) bad_arg("sampling params.topK must be a non-negative integer");
  c.top_k = int32_t(top_k);
  c.top_p = float(field_number(o, "topP"));
  c.min_p = float(field_number(o, "minP"));
  c.repeat_penalty = float(field_number(o, "repeatPenalty"));
  c.presence_penalty = float(field_number(o, "presencePenalty"));
  c.frequency_penalty = float(field_number(o, "frequencyPenalty"));
  c.seed = safe_uint(field_number(o, "seed"), "sampling params.seed");
  Napi::Value bias = o.Get("logitBias");
  if (!bias.IsUndefined()) {
    if (!bias.IsArray()) bad_arg("sampling params.logitBias must be an array of {token, bias}");
    Napi::Array arr = bias.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value e = arr.Get(i);
      if (!e.IsObject()) bad_arg("sampling params.logitBias[" + std::to_string(i) + "] must be {token, bias}");
      Napi::Object eo = e.As<Napi::Object>();
      double token = field_number(eo, "token");
      if (!(token >= -2147483648.0 && token <= 2147483647.0) || token != std::floor(token))
        bad_arg("sampling params.logitBias[" + std::to_string(i) + "].token must be an integer");
      c.logit_bias.push_back(LogitBias{int32_t(token), float(field_number(eo, "bias"))});
    }
  }
  c.allowed = allowed_mask(o.Get("allowed"), "sampling params.allowed");
  return c;
}

Napi::Float32Array arg_logits(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    bad_arg("logits must be a Float32Array");
  Napi::Float32Array logits = info[0].As<Napi::Float32Array>();
  if (logits.ElementLength() == 0 || logits.ElementLength() > 2147483647u) bad_arg("logits must hold 1 to 2^31-1 values");
  return logits;
}

Napi::Value sample_logits(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Napi::Float32Array logits = arg_logits(info);
    SamplingConfig cfg = parse_params(info.Length() > 1 ? info[1] : info.Env().Undefined());
    if (info.Length() < 3 || !info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      bad_arg("recent tokens must be an Int32Array");
    Napi::Int32Array recent = info[2].As<Napi::Int32Array>();
    if (recent.ElementLength() > 2147483647u) bad_arg("recent tokens must hold at most 2^31-1 ids");
    uint64_t position = safe_uint(arg_number(info, 3, "position"), "position");
    // Kept between calls, as the executor keeps its own, so that timing it here times sampling.
    static thread_local SamplerScratch scratch;
    int32_t token = sample_token(logits.Data(), int32_t(logits.ElementLength()), cfg, recent.Data(),
                                 int32_t(recent.ElementLength()), position, scratch);
    return Napi::Number::New(info.Env(), token);
  });
}

// sampleLogitsFromBest(logits, params, position, k): the k best are picked here on the host,
// standing in for a device's top_k_rows.
Napi::Value sample_logits_from_best(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Napi::Float32Array logits = arg_logits(info);
    SamplingConfig cfg = parse_params(info.Length() > 1 ? info[1] : info.Env().Undefined());
    uint64_t position = safe_uint(arg_number(info, 2, "position"), "position");
    const int32_t n_vocab = int32_t(logits.ElementLength());
    const uint32_t k = arg_u32(info, 3, "k");
    if (k < 1 || k > uint32_t(n_vocab)) bad_arg("k must be in [1, " + std::to_string(n_vocab) + "], got " + std::to_string(k));
    Napi::Object out = Napi::Object::New(info.Env());
    const int32_t needed = best_logits_needed(cfg, 0, n_vocab, int32_t(k));
    int32_t token = -1;
    if (needed > 0) {
      std::vector<Candidate> row(logits.ElementLength());
      for (int32_t i = 0; i < n_vocab; i++) {
        const float l = logits[size_t(i)];
        // (NaN has no place in the order; top_k_rows flags such a row for the caller.)
        if (std::isnan(l) || l == INFINITY)
          bad_arg("sampling: logit of token " + std::to_string(i) + " is " + (std::isnan(l) ? "NaN" : "+Infinity"));
        row[size_t(i)] = Candidate{l, i};
      }
      std::partial_sort(row.begin(), row.begin() + k, row.end(),
                        [](const Candidate& a, const Candidate& b) { return a.logit > b.logit || (a.logit == b.logit && a.id < b.id); });
      static thread_local SamplerScratch scratch;
      token = sample_from_best(row.data(), int32_t(k), cfg, position, scratch);
    }
    out.Set("token", Napi::Number::New(info.Env(), token));
    out.Set("needed", Napi::Number::New(info.Env(), needed));
    return out;
  });
}

}  // namespace

void register_sampling(Napi::Env env, Napi::Object exports) {
  exports.Set("sampleLogits", Napi::Function::New(env, sample_logits, "sampleLogits"));
  exports.Set("sampleLogitsFromBest", Napi::Function::New(env, sample_logits_from_best, "sampleLogitsFromBest"));
}

}  // namespace tdm::addon
