// JS face of a loaded model: loadModel(path, config) -> Promise<NativeModel>, and the
// NativeModel object whose step(plan) runs the executor on a worker thread (an AsyncWorker
// that holds the model while it runs, so dispose() during a step is safe), whose profile(op)
// times one subtask for the profiler the same way, and whose placement reports where the
// weights went.
#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include "addon/napi_util.h"
#include "core/model.h"

namespace tdm::addon {

namespace {

constexpr const char* kDisposed = "TDM_DISPOSED";
constexpr double kMaxSafeInteger = 9007199254740991.0;  // 2^53 - 1

// ---- argument parsing (main thread)

double num(const Napi::Object& o, const char* name, const std::string& where) {
  Napi::Value v = o.Get(name);
  if (!v.IsNumber()) bad_arg(where + "." + name + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) bad_arg(where + "." + name + " must be finite");
  return d;
}

int64_t integer(const Napi::Object& o, const char* name, const std::string& where, double lo, double hi) {
  double d = num(o, name, where);
  if (d != std::floor(d) || d < lo || d > hi)
    bad_arg(where + "." + name + " must be an integer in [" + std::to_string(int64_t(lo)) + ", " + std::to_string(int64_t(hi)) + "]");
  return int64_t(d);
}

bool boolean(const Napi::Object& o, const char* name, const std::string& where, bool optional) {
  Napi::Value v = o.Get(name);
  if (optional && v.IsUndefined()) return false;
  if (!v.IsBoolean()) bad_arg(where + "." + name + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

std::string str(const Napi::Object& o, const char* name, const std::string& where) {
  Napi::Value v = o.Get(name);
  if (!v.IsString()) bad_arg(where + "." + name + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

Napi::Object obj(const Napi::Value& v, const std::string& where) {
  if (!v.IsObject() || v.IsArray()) bad_arg(where + " must be an object");
  return v.As<Napi::Object>();
}

Hparams parse_hparams(const Napi::Object& o) {
  const std::string w = "config.hparams";
  const double big = 2147483647.0;
  Hparams hp;
  hp.arch_name = str(o, "architecture", w);
  if (hp.arch_name == "llama") hp.arch = Arch::llama;
  else if (hp.arch_name == "qwen2") hp.arch = Arch::qwen2;
  else if (hp.arch_name == "qwen3") hp.arch = Arch::qwen3;
  else if (hp.arch_name == "qwen2moe") hp.arch = Arch::qwen2moe;
  else if (hp.arch_name == "qwen3moe") hp.arch = Arch::qwen3moe;
  else if (hp.arch_name == "olmoe") hp.arch = Arch::olmoe;
  else if (hp.arch_name == "gpt-oss") hp.arch = Arch::gpt_oss;
  else if (hp.arch_name == "gemma") hp.arch = Arch::gemma;
  else if (hp.arch_name == "gemma2") hp.arch = Arch::gemma2;
  else if (hp.arch_name == "gemma3") hp.arch = Arch::gemma3;
  else throw Error(code::unsupported, "architecture '" + hp.arch_name + "' is not supported (llama, qwen2, qwen3, qwen2moe, qwen3moe, olmoe, gpt-oss, gemma, gemma2, gemma3 are)");
  hp.n_vocab = integer(o, "nVocab", w, 1, big);
  hp.n_ctx_train = integer(o, "nCtxTrain", w, 0, kMaxSafeInteger);
  hp.n_embd = integer(o, "nEmbd", w, 1, big);
  hp.n_layer = integer(o, "nLayer", w, 1, big);
  hp.n_head = integer(o, "nHead", w, 1, big);
  hp.n_head_kv = integer(o, "nHeadKv", w, 1, big);
  hp.head_dim = integer(o, "headDim", w, 1, big);
  hp.head_dim_v = integer(o, "headDimV", w, 1, big);
  hp.n_ff = integer(o, "nFf", w, 0, big);
  hp.n_expert = integer(o, "nExpert", w, 0, big);
  hp.n_expert_used = integer(o, "nExpertUsed", w, 0, big);
  hp.n_ff_expert = integer(o, "nFfExpert", w, 0, big);
  hp.n_ff_shared = integer(o, "nFfShared", w, 0, big);
  const std::string rope = str(o, "ropeType", w);
  if (rope != "norm" && rope != "neox") bad_arg(w + ".ropeType must be 'norm' or 'neox'");
  hp.rope_type = rope == "neox" ? RopeType::neox : RopeType::norm;
  hp.rope_dim = integer(o, "ropeDim", w, 1, big);
  hp.rope_freq_base = float(num(o, "ropeFreqBase", w));
  hp.rope_freq_scale = float(num(o, "ropeFreqScale", w));
  hp.rope_attn_factor = float(num(o, "ropeAttnFactor", w));
  hp.yarn_ext_factor = float(num(o, "yarnExtFactor", w));
  hp.yarn_beta_fast = float(num(o, "yarnBetaFast", w));
  hp.yarn_beta_slow = float(num(o, "yarnBetaSlow", w));
  hp.yarn_orig_ctx = integer(o, "yarnOrigCtx", w, 0, big);
  hp.rms_eps = float(num(o, "rmsEps", w));
  hp.expert_weights_norm = boolean(o, "expertWeightsNorm", w, false);
  const std::string gating = str(o, "expertGating", w);
  if (gating == "softmax") hp.expert_gating = ExpertGating::softmax;
  else if (gating == "sigmoid") hp.expert_gating = ExpertGating::sigmoid;
  else if (gating == "softmax_weight") hp.expert_gating = ExpertGating::softmax_weight;
  else bad_arg(w + ".expertGating must be 'softmax', 'sigmoid' or 'softmax_weight'");
  hp.has_qkv_bias = boolean(o, "hasQkvBias", w, false);
  hp.has_qk_norm = boolean(o, "hasQkNorm", w, false);
  hp.has_shared_expert = boolean(o, "hasSharedExpert", w, false);
  hp.tied_embeddings = boolean(o, "tiedEmbeddings", w, false);
  if (o.Has("slidingWindow")) hp.n_swa = integer(o, "slidingWindow", w, 0, big);
  if (o.Has("slidingWindowPeriod")) hp.swa_period = integer(o, "slidingWindowPeriod", w, 0, big);
  hp.rope_freq_base_swa = o.Has("ropeFreqBaseSwa") ? float(num(o, "ropeFreqBaseSwa", w)) : hp.rope_freq_base;
  hp.has_attn_sinks = boolean(o, "hasAttnSinks", w, true);
  hp.has_expert_bias = boolean(o, "hasExpertBias", w, true);
  hp.swiglu_oai = boolean(o, "swigluOai", w, true);
  // The Gemma architectures' fields; absent ones keep every other architecture's forward pass.
  hp.rope_freq_scale_swa = o.Has("ropeFreqScaleSwa") ? float(num(o, "ropeFreqScaleSwa", w)) : hp.rope_freq_scale;
  if (o.Has("embeddingScale")) hp.embd_scale = float(num(o, "embeddingScale", w));
  hp.attn_scale = o.Has("attentionScale") ? float(num(o, "attentionScale", w)) : 1.0f / std::sqrt(float(hp.head_dim));
  hp.has_post_norms = boolean(o, "hasPostNorms", w, true);
  if (o.Has("attnLogitSoftcap")) hp.attn_softcap = float(num(o, "attnLogitSoftcap", w));
  if (o.Has("finalLogitSoftcap")) hp.final_softcap = float(num(o, "finalLogitSoftcap", w));
  if (o.Has("ffnActivation")) {
    const std::string act = str(o, "ffnActivation", w);
    if (act != "silu" && act != "gelu") bad_arg(w + ".ffnActivation must be 'silu' or 'gelu'");
    hp.ffn_act = act == "gelu" ? FfnAct::gelu : FfnAct::silu;
  }
  return hp;
}

ExpertCost parse_expert_cost(const Napi::Value& v, const std::string& w) {
  Napi::Object c = obj(v, w);
  ExpertCost x;
  x.cpu_fixed_us = num(c, "cpuFixedUs", w);
  x.cpu_us_per_token = num(c, "cpuUsPerToken", w);
  if (!c.Get("cpuCallUs").IsUndefined()) x.cpu_call_us = num(c, "cpuCallUs", w);
  x.gpu_fixed_us = num(c, "gpuFixedUs", w);
  x.gpu_us_per_token = num(c, "gpuUsPerToken", w);
  x.link_latency_us = num(c, "linkLatencyUs", w);
  x.link_bytes_per_us = num(c, "linkBytesPerUs", w);
  return x;
}

ExpertConfig parse_experts(const Napi::Object& o) {
  const std::string w = "config.experts";
  ExpertConfig x;
  x.enabled = true;
  if (!o.Get("policy").IsUndefined()) {
    const std::string p = str(o, "policy", w);
    if (p == "dynamic") x.policy = ExpertPolicy::dynamic;
    else if (p == "cpu-all") x.policy = ExpertPolicy::cpu_all;
    else if (p == "cpu-first-layers") x.policy = ExpertPolicy::cpu_first_layers;
    else bad_arg(w + ".policy must be 'dynamic', 'cpu-all' or 'cpu-first-layers'");
  }
  if (!o.Get("cpuLayers").IsUndefined()) x.cpu_layers = int32_t(integer(o, "cpuLayers", w, 0, 1 << 20));
  Napi::Value ns = o.Get("nStar");
  if (!ns.IsUndefined()) {
    if (!ns.IsNumber()) bad_arg(w + ".nStar must be a number");
    const double d = ns.As<Napi::Number>().DoubleValue();
    if (std::isnan(d) || d < 0) bad_arg(w + ".nStar must be a non-negative number or Infinity");
    x.n_star = d;
  }
  if (!o.Get("cost").IsUndefined()) {
    x.has_cost = true;
    x.cost = parse_expert_cost(o.Get("cost"), w + ".cost");
  }
  if (!o.Get("scoring").IsUndefined()) {
    const std::string sc = str(o, "scoring", w);
    if (sc == "decayed-probability") x.scoring = ExpertScoring::decayed_probability;
    else if (sc == "frequency-lru") x.scoring = ExpertScoring::frequency_lru;
    else bad_arg(w + ".scoring must be 'decayed-probability' or 'frequency-lru'");
  }
  if (!o.Get("decay").IsUndefined()) x.decay = num(o, "decay", w);
  if (!o.Get("maxSlots").IsUndefined()) x.max_slots = integer(o, "maxSlots", w, 0, kMaxSafeInteger);
  if (!o.Get("admitPerLayer").IsUndefined()) x.admit_per_layer = int32_t(integer(o, "admitPerLayer", w, 0, 1 << 20));
  if (!o.Get("prefetchPerLayer").IsUndefined()) x.prefetch_per_layer = int32_t(integer(o, "prefetchPerLayer", w, 0, 1 << 20));
  x.prefetch_when_idle = boolean(o, "prefetchWhenIdle", w, true);
  x.pregate = boolean(o, "pregate", w, true);
  x.prefetch_early = boolean(o, "prefetchEarly", w, true);
  if (!o.Get("admitMargin").IsUndefined()) x.admit_margin = num(o, "admitMargin", w);
  if (!o.Get("cpuWeights").IsUndefined()) {
    const std::string cw = str(o, "cpuWeights", w);
    if (cw != "mapping" && cw != "slabs") bad_arg(w + ".cpuWeights must be 'mapping' or 'slabs'");
    x.cpu_reads_mapping = cw == "mapping";
  }
  Napi::Value is = o.Get("initialScores");
  if (!is.IsUndefined()) {
    if (is.IsTypedArray() && is.As<Napi::TypedArray>().TypedArrayType() == napi_float64_array) {
      Napi::Float64Array a = is.As<Napi::Float64Array>();
      x.initial_scores.assign(a.Data(), a.Data() + a.ElementLength());
    } else if (is.IsArray()) {
      Napi::Array a = is.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); ++i) {
        Napi::Value e = a.Get(i);
        if (!e.IsNumber()) bad_arg(w + ".initialScores must hold numbers");
        x.initial_scores.push_back(e.As<Napi::Number>().DoubleValue());
      }
    } else {
      bad_arg(w + ".initialScores must be a Float64Array or an array of numbers");
    }
    for (double d : x.initial_scores)
      if (!std::isfinite(d)) bad_arg(w + ".initialScores must be finite");
  }
  return x;
}

ModelConfig parse_config(const Napi::Value& v) {
  Napi::Object o = obj(v, "config");
  ModelConfig cfg;
  cfg.hp = parse_hparams(obj(o.Get("hparams"), "config.hparams"));
  cfg.threads = int(integer(o, "threads", "config", 1, 1024));
  cfg.kv_block_tokens = int32_t(integer(o, "kvBlockTokens", "config", 1, 4096));
  if (!o.Get("kvType").IsUndefined()) {
    cfg.kv_type = str(o, "kvType", "config");
    if (cfg.kv_type != "f16" && cfg.kv_type != "q8_0") bad_arg("config.kvType must be 'f16' or 'q8_0'");
  }
  Napi::Object blocks = obj(o.Get("kvBlocks"), "config.kvBlocks");
  cfg.kv_blocks_device = int32_t(integer(blocks, "device", "config.kvBlocks", 0, 2147483647.0));
  cfg.kv_blocks_host = int32_t(integer(blocks, "host", "config.kvBlocks", 0, 2147483647.0));
  cfg.kv_split_sliding = boolean(o, "kvSplitSliding", "config", true);
  cfg.kv_stream = o.Get("kvStream").IsUndefined() || boolean(o, "kvStream", "config", false);
  if (!o.Get("kvStreamStagingBytes").IsUndefined())
    cfg.kv_stream_staging_bytes = size_t(integer(o, "kvStreamStagingBytes", "config", 0, kMaxSafeInteger));
  Napi::Value variant = o.Get("cpuVariant");
  if (!variant.IsUndefined()) {
    if (!variant.IsString()) bad_arg("config.cpuVariant must be a string");
    cfg.cpu_variant = variant.As<Napi::String>().Utf8Value();
  }
  if (!o.Get("device").IsUndefined()) {
    cfg.device = str(o, "device", "config");
    if (cfg.device != "none" && cfg.device != "auto" && cfg.device != "gpu" && cfg.device != "cpu-standin")
      bad_arg("config.device must be 'none', 'auto', 'gpu' or 'cpu-standin'");
  }
  if (!o.Get("deviceThreads").IsUndefined()) cfg.device_threads = int(integer(o, "deviceThreads", "config", 1, 1024));
  if (!o.Get("deviceWeightBytes").IsUndefined())
    cfg.device_weight_bytes = integer(o, "deviceWeightBytes", "config", 0, kMaxSafeInteger);
  if (!o.Get("experts").IsUndefined()) cfg.experts = parse_experts(obj(o.Get("experts"), "config.experts"));
  return cfg;
}

// ---- the step plan and result (main thread, every step)
//
// A step's plan has about thirty properties a sequence. Looking one up by a C string makes and
// internalizes a JS string each time, which at 48 sequences cost about 0.2 ms a step on this
// path (the GPU waits for it), so the names are JS strings made once per model (StepNames).

enum class Nm : uint8_t {
  strategy, copies, sequences, fromTier, fromBlock, toTier, toBlock,
  seqId, tokens, startPos, blockTable, slidingBlockTable, kvTier, attention, sample, sampling, recentTokens,
  returnAllLogits, returnLogits, returnEmbeddings, subBatch, numDraft, penaltyWindow, decodeSteps, stopTokens,
  temperature, topK, topP, minP, repeatPenalty, presencePenalty, frequencyPenalty, seed, logitBias, token, bias, allowed,
  logits, allLogits, embeddings,
  // string values
  device, host, cpu, gpu, gpuOnly, pipeline, overlap,
  count
};

constexpr const char* kNameText[] = {
    "strategy", "copies", "sequences", "fromTier", "fromBlock", "toTier", "toBlock",
    "seqId", "tokens", "startPos", "blockTable", "slidingBlockTable", "kvTier", "attention", "sample", "sampling", "recentTokens",
    "returnAllLogits", "returnLogits", "returnEmbeddings", "subBatch", "numDraft", "penaltyWindow", "decodeSteps", "stopTokens",
    "temperature", "topK", "topP", "minP", "repeatPenalty", "presencePenalty", "frequencyPenalty", "seed", "logitBias", "token", "bias", "allowed",
    "logits", "allLogits", "embeddings",
    "device", "host", "cpu", "gpu", "gpu-only", "pipeline", "overlap"};
static_assert(sizeof(kNameText) / sizeof(kNameText[0]) == size_t(Nm::count), "one text per name");

// The names as JS strings, kept in an array (Node 20 keeps references to objects only).
class StepNames {
 public:
  explicit StepNames(Napi::Env env) {
    Napi::Array a = Napi::Array::New(env, size_t(Nm::count));
    for (size_t i = 0; i < size_t(Nm::count); ++i) a.Set(uint32_t(i), Napi::String::New(env, kNameText[i]));
    table_ = Napi::Persistent(a.As<Napi::Object>());
  }

  // The strings as handles of the current call.
  class Scope {
   public:
    explicit Scope(const StepNames& names) {
      Napi::Object a = names.table_.Value();
      for (size_t i = 0; i < size_t(Nm::count); ++i) v_[i] = a.Get(uint32_t(i));
    }
    Napi::Value operator[](Nm n) const { return v_[size_t(n)]; }

   private:
    Napi::Value v_[size_t(Nm::count)];
  };

 private:
  Napi::ObjectReference table_;
};
using Names = StepNames::Scope;

// Where a plan field sits, for messages: "plan.sequences[3].sampling". Built only on error.
struct Where {
  const char* prefix;
  int64_t index = -1;
  const char* suffix = "";
  std::string str() const {
    return index < 0 ? std::string(prefix) + suffix : std::string(prefix) + "[" + std::to_string(index) + "]" + suffix;
  }
};

// Reads the fields of one plan object with the checks and messages of the helpers above.
class Fields {
 public:
  Fields(const Names& names, const Napi::Value& v, Where where) : names_(names), where_(where) {
    if (!v.IsObject() || v.IsArray()) bad_arg(where.str() + " must be an object");
    o_ = v.As<Napi::Object>();
  }
  Napi::Value get(Nm n) const { return o_.Get(names_[n]); }
  bool has(Nm n) const { return !get(n).IsUndefined(); }
  [[noreturn]] void fail(Nm n, const std::string& what) const { bad_arg(where_.str() + "." + kNameText[size_t(n)] + " " + what); }

  double number(Nm n) const {
    Napi::Value v = get(n);
    if (!v.IsNumber()) fail(n, "must be a number");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d)) fail(n, "must be finite");
    return d;
  }
  int64_t integer(Nm n, double lo, double hi) const {
    const double d = number(n);
    if (d != std::floor(d) || d < lo || d > hi)
      fail(n, "must be an integer in [" + std::to_string(int64_t(lo)) + ", " + std::to_string(int64_t(hi)) + "]");
    return int64_t(d);
  }
  bool flag(Nm n, bool optional) const {
    Napi::Value v = get(n);
    if (optional && v.IsUndefined()) return false;
    if (!v.IsBoolean()) fail(n, "must be a boolean");
    return v.As<Napi::Boolean>().Value();
  }
  std::vector<int32_t> int32s(Nm n, bool optional) const {
    Napi::Value v = get(n);
    if (optional && v.IsUndefined()) return {};
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) fail(n, "must be an Int32Array");
    Napi::Int32Array a = v.As<Napi::Int32Array>();
    return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
  }
  // Which of `choices` a string field holds (JS strings compared without converting them), or -1.
  int choice(Nm n, std::initializer_list<Nm> choices) const {
    Napi::Value v = get(n);
    if (!v.IsString()) fail(n, "must be a string");
    int i = 0;
    for (Nm c : choices) {
      if (v.StrictEquals(names_[c])) return i;
      ++i;
    }
    return -1;
  }
  const Where& where() const { return where_; }
  const Names& names() const { return names_; }

 private:
  const Names& names_;
  Napi::Object o_;
  Where where_;
};

SamplingConfig parse_sampling(const Fields& f) {
  SamplingConfig c;
  c.temperature = float(f.number(Nm::temperature));
  c.top_k = int32_t(f.integer(Nm::topK, 0, 2147483647.0));
  c.top_p = float(f.number(Nm::topP));
  c.min_p = float(f.number(Nm::minP));
  c.repeat_penalty = float(f.number(Nm::repeatPenalty));
  c.presence_penalty = float(f.number(Nm::presencePenalty));
  c.frequency_penalty = float(f.number(Nm::frequencyPenalty));
  c.seed = uint64_t(f.integer(Nm::seed, 0, kMaxSafeInteger));
  Napi::Value bias = f.get(Nm::logitBias);
  if (!bias.IsUndefined()) {
    if (!bias.IsArray()) f.fail(Nm::logitBias, "must be an array of {token, bias}");
    Napi::Array arr = bias.As<Napi::Array>();
    const std::string at = f.where().str() + ".logitBias";
    for (uint32_t i = 0; i < arr.Length(); ++i) {
      const Fields e(f.names(), arr.Get(i), Where{at.c_str(), i});
      const int32_t token = int32_t(e.integer(Nm::token, -2147483648.0, 2147483647.0));
      Napi::Value b = e.get(Nm::bias);
      if (!b.IsNumber()) e.fail(Nm::bias, "must be a number");
      c.logit_bias.push_back(LogitBias{token, float(b.As<Napi::Number>().DoubleValue())});
    }
  }
  Napi::Value allowed = f.get(Nm::allowed);
  if (!allowed.IsUndefined()) c.allowed = allowed_mask(allowed, f.where().str() + ".allowed");
  return c;
}

KvTier tier(const Fields& f, Nm n) {
  const int i = f.choice(n, {Nm::device, Nm::host});
  if (i < 0) f.fail(n, "must be 'device' or 'host'");
  return i == 0 ? KvTier::device : KvTier::host;
}

StepPlan parse_plan(const StepNames& table, const Napi::Value& v) {
  const Names names(table);
  const Fields o(names, v, Where{"plan"});
  StepPlan p;
  switch (o.choice(Nm::strategy, {Nm::cpu, Nm::gpuOnly, Nm::pipeline, Nm::overlap})) {
    case 0: p.strategy = Strategy::cpu; break;
    case 1: p.strategy = Strategy::gpu_only; break;
    case 2: p.strategy = Strategy::pipeline; break;
    case 3: p.strategy = Strategy::overlap; break;
    default: bad_arg("plan.strategy must be 'cpu', 'gpu-only', 'pipeline' or 'overlap'");
  }

  Napi::Value copies = o.get(Nm::copies);
  if (!copies.IsArray()) bad_arg("plan.copies must be an array");
  Napi::Array ca = copies.As<Napi::Array>();
  for (uint32_t i = 0; i < ca.Length(); ++i) {
    const Fields c(names, ca.Get(i), Where{"plan.copies", i});
    BlockCopy bc;
    bc.from_tier = tier(c, Nm::fromTier);
    bc.from_block = int32_t(c.integer(Nm::fromBlock, -2147483648.0, 2147483647.0));
    bc.to_tier = tier(c, Nm::toTier);
    bc.to_block = int32_t(c.integer(Nm::toBlock, -2147483648.0, 2147483647.0));
    p.copies.push_back(bc);
  }

  Napi::Value seqs = o.get(Nm::sequences);
  if (!seqs.IsArray()) bad_arg("plan.sequences must be an array");
  Napi::Array sa = seqs.As<Napi::Array>();
  p.seqs.reserve(sa.Length());
  for (uint32_t i = 0; i < sa.Length(); ++i) {
    const Fields s(names, sa.Get(i), Where{"plan.sequences", i});
    SeqPlan sp;
    sp.seq_id = s.integer(Nm::seqId, -kMaxSafeInteger, kMaxSafeInteger);
    sp.tokens = s.int32s(Nm::tokens, false);
    sp.start_pos = int32_t(s.integer(Nm::startPos, 0, 2147483647.0));
    sp.block_table = s.int32s(Nm::blockTable, false);
    sp.sliding_block_table = s.int32s(Nm::slidingBlockTable, true);
    sp.tier = tier(s, Nm::kvTier);
    const int dev = s.choice(Nm::attention, {Nm::cpu, Nm::gpu});
    if (dev < 0) s.fail(Nm::attention, "must be 'cpu' or 'gpu'");
    sp.attention = dev == 1 ? AttnDevice::gpu : AttnDevice::cpu;
    sp.sample = s.flag(Nm::sample, false);
    Napi::Value sampling = s.get(Nm::sampling);
    if (!sampling.IsUndefined()) sp.sampling = parse_sampling(Fields(names, sampling, Where{"plan.sequences", i, ".sampling"}));
    sp.recent = s.int32s(Nm::recentTokens, true);
    sp.return_all_logits = s.flag(Nm::returnAllLogits, true);
    sp.return_logits = s.flag(Nm::returnLogits, true);
    sp.return_embeddings = s.flag(Nm::returnEmbeddings, true);
    if (s.has(Nm::subBatch)) sp.sub_batch = int32_t(s.integer(Nm::subBatch, 0, 1));
    if (s.has(Nm::numDraft)) sp.n_draft = int32_t(s.integer(Nm::numDraft, 0, 2147483647.0));
    if (s.has(Nm::penaltyWindow)) sp.penalty_window = int32_t(s.integer(Nm::penaltyWindow, 0, 2147483647.0));
    if (s.has(Nm::decodeSteps)) sp.decode_steps = int32_t(s.integer(Nm::decodeSteps, 1, double(kMaxDecodeSteps)));
    sp.stop_tokens = s.int32s(Nm::stopTokens, true);
    p.seqs.push_back(std::move(sp));
  }
  return p;
}

Napi::Float32Array to_f32(Napi::Env env, const std::vector<float>& v) {
  Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(float));
  return a;
}

Napi::Object result_to_js(Napi::Env env, const StepNames& table, const StepResult& r) {
  const Names names(table);
  Napi::Object out = Napi::Object::New(env);
  Napi::Array seqs = Napi::Array::New(env, r.seqs.size());
  const Napi::Value seq_id = names[Nm::seqId], token = names[Nm::token];
  for (size_t i = 0; i < r.seqs.size(); ++i) {
    const SeqResult& s = r.seqs[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set(seq_id, Napi::Number::New(env, double(s.seq_id)));
    o.Set(token, Napi::Number::New(env, s.token));
    if (s.has_logits) o.Set(names[Nm::logits], to_f32(env, s.logits));
    if (s.has_all_logits) o.Set(names[Nm::allLogits], to_f32(env, s.all_logits));
    if (s.has_embeddings) o.Set(names[Nm::embeddings], to_f32(env, s.embeddings));
    if (!s.tokens.empty()) {
      Napi::Int32Array t = Napi::Int32Array::New(env, s.tokens.size());
      std::memcpy(t.Data(), s.tokens.data(), s.tokens.size() * sizeof(int32_t));
      o.Set(names[Nm::tokens], t);
    }
    seqs.Set(uint32_t(i), o);
  }
  out.Set(names[Nm::sequences], seqs);
  Napi::Object phases = Napi::Object::New(env);
  for (const auto& kv : r.phase_us) phases.Set(kv.first, Napi::Number::New(env, kv.second));
  out.Set("phaseUs", phases);
  out.Set("totalUs", Napi::Number::New(env, r.total_us));
  out.Set("rounds", Napi::Number::New(env, r.rounds));
  if (r.has_experts) {
    const ExpertStats& x = r.experts;
    Napi::Object e = Napi::Object::New(env);
    const std::pair<const char*, int64_t> fields[] = {
        {"hits", x.hits},
        {"hitRows", x.hit_rows},
        {"misses", x.misses},
        {"copies", x.copies},
        {"admissions", x.admissions},
        {"prefetches", x.prefetches},
        {"prefetchHits", x.prefetch_hits},
        {"evictions", x.evictions},
        {"deviceExperts", x.device_experts},
        {"cpuExperts", x.cpu_experts},
        {"deviceRows", x.device_rows},
        {"cpuRows", x.cpu_rows},
        {"cpuCalls", x.cpu_calls},
        {"copyBytes", x.copy_bytes},
        {"activationBytes", x.activation_bytes},
        {"prefillCopies", x.prefill_copies},
        {"prefillCopyBytes", x.prefill_copy_bytes},
        {"overlappedCopies", x.overlapped_copies}};
    for (const auto& f : fields) e.Set(f.first, Napi::Number::New(env, double(f.second)));
    out.Set("experts", e);
    Napi::Float64Array calls = Napi::Float64Array::New(env, r.cpu_expert_calls.size());
    std::copy(r.cpu_expert_calls.begin(), r.cpu_expert_calls.end(), calls.Data());
    out.Set("cpuExpertCalls", calls);
  }
  return out;
}

// Rejects with {code, message} without throwing into JS.
Napi::Promise rejected(Napi::Env env, const char* code, const std::string& message) {
  Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
  d.Reject(to_js_error(env, code, message).Value());
  return d.Promise();
}

// Runs f, capturing a tdm::Error (or any exception) as a code and message for a rejection.
template <typename F>
void capture(std::string* code, std::string* message, F&& f) {
  try {
    f();
  } catch (const Error& e) {
    *code = e.code();
    *message = e.what();
  } catch (const std::bad_alloc&) {
    *code = code::oom;
    *message = "out of host memory";
  } catch (const std::exception& e) {
    *code = "TDM_INTERNAL";
    *message = e.what();
  }
}

// ---- the NativeModel object

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {InstanceMethod<&NativeModel::step>("step"), InstanceMethod<&NativeModel::profile>("profile"),
                        InstanceMethod<&NativeModel::setExpertCost>("setExpertCost"),
                        InstanceMethod<&NativeModel::interruptBurst>("interruptBurst"),
                        InstanceMethod<&NativeModel::dispose>("dispose"), InstanceAccessor<&NativeModel::info>("info"),
                        InstanceAccessor<&NativeModel::placement>("placement")});
  }

  // Built only by loadModel, which passes the loaded model as an External.
  explicit NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info), names_(info.Env()) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw to_js_error(info.Env(), code::bad_argument, "NativeModel is created by loadModel(), not with new");
    model_ = *info[0].As<Napi::External<std::shared_ptr<Model>>>().Data();
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("nVocab", Napi::Number::New(env, double(model_->hparams().n_vocab)));
    o.Set("kvBlockBytes", Napi::Number::New(env, double(model_->kv_block_bytes())));
    o.Set("kvGroups", Napi::Number::New(env, double(model_->kv_groups())));
    Napi::Array backends = Napi::Array::New(env);
    std::vector<std::string> names = model_->backends();
    for (size_t i = 0; i < names.size(); ++i) backends.Set(uint32_t(i), names[i]);
    o.Set("backends", backends);
    o.Freeze();
    info_ = Napi::Persistent(o);
    const WeightPlacement& wp = model_->placement();
    Napi::Object pl = Napi::Object::New(env);
    pl.Set("device", names.size() > 1 ? Napi::Value(Napi::String::New(env, names[1])) : env.Null());
    pl.Set("deviceName", model_->device_name());
    pl.Set("deviceBytes", double(wp.device_bytes));
    pl.Set("hostBytes", double(wp.host_bytes));
    pl.Set("deviceTensors", wp.device_tensors);
    pl.Set("hostTensors", wp.host_tensors);
    pl.Set("streamsHostKv", model_->streams_host_kv());
    pl.Set("streamBlocksMax", model_->stream_blocks_max());
    pl.Set("hostKvLocked", model_->host_kv_locked());
    pl.Set("hostKvLockMs", model_->host_kv_lock_ms());
    if (const ExpertOffload* x = model_->experts()) {
      Napi::Object e = Napi::Object::New(env);
      e.Set("policy", x->policy_name());
      e.Set("slots", double(x->n_slots()));
      e.Set("slotBytes", double(x->slot_bytes()));
      e.Set("resident", double(x->resident()));
      e.Set("hostSlabBytes", double(x->host_bytes()));
      e.Set("nStar", Napi::Number::New(env, x->n_star(0)));
      pl.Set("experts", e);
    }
    pl.Freeze();
    placement_ = Napi::Persistent(pl);
  }

  void finish_step() { busy_ = false; }
  const StepNames& names() const { return names_; }

 private:
  Napi::Value step(const Napi::CallbackInfo& info);
  Napi::Value profile(const Napi::CallbackInfo& info);
  Napi::Value setExpertCost(const Napi::CallbackInfo& info);

  Napi::Value interruptBurst(const Napi::CallbackInfo& info) {
    if (model_) model_->interrupt_burst();
    return info.Env().Undefined();
  }

  Napi::Value dispose(const Napi::CallbackInfo& info) {
    // A running step keeps its own reference; the model is freed when it finishes.
    model_.reset();
    return info.Env().Undefined();
  }

  Napi::Value info(const Napi::CallbackInfo&) { return info_.Value(); }
  Napi::Value placement(const Napi::CallbackInfo&) { return placement_.Value(); }

  std::shared_ptr<Model> model_;
  StepNames names_;
  bool busy_ = false;  // a step or a profile run is in flight
  Napi::ObjectReference info_;
  Napi::ObjectReference placement_;
};

class StepWorker : public Napi::AsyncWorker {
 public:
  StepWorker(Napi::Env env, NativeModel* owner, Napi::Object self, std::shared_ptr<Model> model, StepPlan plan)
      : Napi::AsyncWorker(env, "tandem.step"),
        deferred_(Napi::Promise::Deferred::New(env)),
        owner_(owner),
        self_(Napi::Persistent(self)),
        model_(std::move(model)),
        plan_(std::move(plan)) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    capture(&code_, &message_, [&] { result_ = model_->step(plan_); });
  }

  void OnOK() override {
    Napi::Env env = Env();
    owner_->finish_step();
    if (!code_.empty()) {
      deferred_.Reject(to_js_error(env, code_.c_str(), message_).Value());
      return;
    }
    std::string code, message;
    Napi::Value out;
    capture(&code, &message, [&] { out = result_to_js(env, owner_->names(), result_); });
    if (!code.empty()) deferred_.Reject(to_js_error(env, code.c_str(), message).Value());
    else deferred_.Resolve(out);
  }

  void OnError(const Napi::Error& e) override {
    owner_->finish_step();
    deferred_.Reject(to_js_error(Env(), "TDM_INTERNAL", e.Message()).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  NativeModel* owner_;
  Napi::ObjectReference self_;  // keeps the NativeModel (and so owner_) alive while running
  std::shared_ptr<Model> model_;
  StepPlan plan_;
  StepResult result_;
  std::string code_, message_;
};

Napi::Value NativeModel::step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!model_) return rejected(env, kDisposed, "step() on a disposed model");
  if (busy_)
    return rejected(env, code::bad_argument, "step() while another step of this model is running: await the previous step first");
  StepPlan plan;
  std::string code, message;
  capture(&code, &message, [&] {
    if (info.Length() < 1) bad_arg("step(plan) needs a plan");
    plan = parse_plan(names_, info[0]);
  });
  if (!code.empty()) return rejected(env, code.c_str(), message);
  busy_ = true;
  // An interrupt belongs to the step it was sent during: this one starts clean.
  model_->clear_burst_interrupt();
  auto* worker = new StepWorker(env, this, info.This().As<Napi::Object>(), model_, std::move(plan));
  Napi::Promise p = worker->promise();
  worker->Queue();
  return p;
}

// One profiler measurement: which subtask and its size.
struct ProfileOp {
  std::string kind;  // "linear", "head", "attention", "copy", "stream", "expert"
  int64_t tokens = 1;
  bool on_cpu = false;
  int32_t requests = 1;
  int32_t context = 0;
  bool to_device = true;
  int64_t bytes = 0;
  int iters = 3;
  int32_t idle_us = 0;  // expert: the pool sleeps this long before each timed run
  int64_t logits_rows = -1;  // linear: rows through the LM head (-1: every row)
};

ProfileOp parse_profile(const Napi::Value& v) {
  const std::string w = "op";
  Napi::Object o = obj(v, w);
  ProfileOp p;
  p.kind = str(o, "kind", w);
  if (!o.Get("iters").IsUndefined()) p.iters = int(integer(o, "iters", w, 1, 1000));
  if (p.kind == "linear") {
    p.tokens = integer(o, "tokens", w, 1, 65536);
    if (!o.Get("logitsRows").IsUndefined()) p.logits_rows = integer(o, "logitsRows", w, 0, double(p.tokens));
  } else if (p.kind == "head") {
    p.tokens = integer(o, "rows", w, 1, 65536);
  } else if (p.kind == "attention") {
    const std::string dev = str(o, "device", w);
    if (dev != "cpu" && dev != "gpu") bad_arg("op.device must be 'cpu' or 'gpu'");
    p.on_cpu = dev == "cpu";
    p.requests = int32_t(integer(o, "requests", w, 1, 4096));
    p.context = int32_t(integer(o, "context", w, 0, 16777216.0));
    p.tokens = integer(o, "tokens", w, 1, 16777216.0);
  } else if (p.kind == "copy") {
    const std::string dir = str(o, "direction", w);
    if (dir != "h2d" && dir != "d2h") bad_arg("op.direction must be 'h2d' or 'd2h'");
    p.to_device = dir == "h2d";
    p.bytes = integer(o, "bytes", w, 1, 17179869184.0);
  } else if (p.kind == "stream") {
    p.tokens = integer(o, "blocks", w, 1, 1048576);
  } else if (p.kind == "expert") {
    const std::string dev = str(o, "device", w);
    if (dev != "cpu" && dev != "gpu") bad_arg("op.device must be 'cpu' or 'gpu'");
    p.on_cpu = dev == "cpu";
    p.tokens = integer(o, "tokens", w, 1, 65535);
    if (!o.Get("idleUs").IsUndefined()) p.idle_us = int32_t(integer(o, "idleUs", w, 0, 100000));
  } else {
    bad_arg("op.kind must be 'linear', 'head', 'attention', 'copy', 'stream' or 'expert'");
  }
  return p;
}

class ProfileWorker : public Napi::AsyncWorker {
 public:
  ProfileWorker(Napi::Env env, NativeModel* owner, Napi::Object self, std::shared_ptr<Model> model, ProfileOp op)
      : Napi::AsyncWorker(env, "tandem.profile"),
        deferred_(Napi::Promise::Deferred::New(env)),
        owner_(owner),
        self_(Napi::Persistent(self)),
        model_(std::move(model)),
        op_(std::move(op)) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    capture(&code_, &message_, [&] {
      if (op_.kind == "linear") us_ = model_->time_linear(op_.tokens, op_.logits_rows < 0 ? op_.tokens : op_.logits_rows, op_.iters);
      else if (op_.kind == "head") us_ = model_->time_head(op_.tokens, op_.iters);
      else if (op_.kind == "attention") us_ = model_->time_attention(op_.on_cpu, op_.requests, op_.context, int32_t(op_.tokens), op_.iters);
      else if (op_.kind == "expert") us_ = model_->time_expert(op_.on_cpu, op_.tokens, op_.iters, op_.idle_us);
      else if (op_.kind == "stream") us_ = model_->time_stream(int32_t(op_.tokens), op_.iters);
      else us_ = model_->time_copy(op_.to_device, size_t(op_.bytes), op_.iters);
    });
  }

  void OnOK() override {
    owner_->finish_step();
    if (!code_.empty()) deferred_.Reject(to_js_error(Env(), code_.c_str(), message_).Value());
    else deferred_.Resolve(Napi::Number::New(Env(), us_));
  }

  void OnError(const Napi::Error& e) override {
    owner_->finish_step();
    deferred_.Reject(to_js_error(Env(), "TDM_INTERNAL", e.Message()).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  NativeModel* owner_;
  Napi::ObjectReference self_;  // keeps the NativeModel alive while running
  std::shared_ptr<Model> model_;
  ProfileOp op_;
  double us_ = 0;
  std::string code_, message_;
};

Napi::Value NativeModel::profile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!model_) return rejected(env, kDisposed, "profile() on a disposed model");
  if (busy_) return rejected(env, code::bad_argument, "profile() while a step or another profile() of this model is running");
  ProfileOp op;
  std::string code, message;
  capture(&code, &message, [&] {
    if (info.Length() < 1) bad_arg("profile(op) needs an op");
    op = parse_profile(info[0]);
  });
  if (!code.empty()) return rejected(env, code.c_str(), message);
  busy_ = true;
  auto* worker = new ProfileWorker(env, this, info.This().As<Napi::Object>(), model_, std::move(op));
  Napi::Promise p = worker->promise();
  worker->Queue();
  return p;
}

// Synchronous: it only swaps numbers the next step reads, and no step runs while it does.
Napi::Value NativeModel::setExpertCost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!model_) throw to_js_error(env, kDisposed, "setExpertCost() on a disposed model");
  if (busy_) throw to_js_error(env, code::bad_argument, "setExpertCost() while a step or a profile() of this model is running");
  std::string code, message;
  capture(&code, &message, [&] {
    if (info.Length() < 1) bad_arg("setExpertCost(cost) needs a cost");
    model_->set_expert_cost(parse_expert_cost(info[0], "cost"));
  });
  if (!code.empty()) throw to_js_error(env, code.c_str(), message);
  return env.Undefined();
}

// ---- loadModel

class LoadWorker : public Napi::AsyncProgressWorker<double> {
 public:
  LoadWorker(Napi::Env env, Napi::FunctionReference* ctor, std::string path, ModelConfig cfg, Napi::Value on_progress)
      : Napi::AsyncProgressWorker<double>(env, "tandem.loadModel"),
        deferred_(Napi::Promise::Deferred::New(env)),
        ctor_(ctor),
        path_(std::move(path)),
        cfg_(std::move(cfg)) {
    if (on_progress.IsFunction()) progress_ = Napi::Persistent(on_progress.As<Napi::Function>());
  }

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute(const ExecutionProgress& progress) override {
    capture(&code_, &message_, [&] {
      model_ = Model::load(path_, cfg_, [&](double f) { progress.Send(&f, 1); });
    });
  }

  void OnProgress(const double* data, size_t count) override {
    if (count > 0) report(data[count - 1]);
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (!code_.empty()) {
      deferred_.Reject(to_js_error(env, code_.c_str(), message_).Value());
      return;
    }
    report(1.0);
    if (!progress_error_.empty()) {
      deferred_.Reject(to_js_error(env, code::bad_argument, "config.onProgress threw: " + progress_error_).Value());
      return;
    }
    try {
      Napi::Object obj = ctor_->New({Napi::External<std::shared_ptr<Model>>::New(env, &model_)});
      deferred_.Resolve(obj);
    } catch (const Napi::Error& e) {
      deferred_.Reject(to_js_error(env, "TDM_INTERNAL", e.Message()).Value());
    }
  }

  void OnError(const Napi::Error& e) override {
    deferred_.Reject(to_js_error(Env(), "TDM_INTERNAL", e.Message()).Value());
  }

 private:
  // Calls onProgress; an exception there is kept and turns the load into a rejection.
  void report(double f) {
    if (progress_.IsEmpty() || !progress_error_.empty()) return;
    try {
      progress_.Call({Napi::Number::New(Env(), f)});
    } catch (const Napi::Error& e) {
      progress_error_ = e.Message();
    }
  }

  Napi::Promise::Deferred deferred_;
  Napi::FunctionReference* ctor_;
  Napi::FunctionReference progress_;
  std::string path_;
  ModelConfig cfg_;
  std::shared_ptr<Model> model_;
  std::string code_, message_, progress_error_;
};

Napi::Value load_model(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* ctor = static_cast<Napi::FunctionReference*>(info.Data());
  std::string path;
  ModelConfig cfg;
  std::string code, message;
  Napi::Value on_progress = env.Undefined();
  capture(&code, &message, [&] {
    path = arg_string(info, 0, "path");
    if (info.Length() < 2) bad_arg("loadModel(path, config) needs a config");
    cfg = parse_config(info[1]);
    on_progress = info[1].As<Napi::Object>().Get("onProgress");
    if (!on_progress.IsUndefined() && !on_progress.IsFunction()) bad_arg("config.onProgress must be a function");
  });
  if (!code.empty()) return rejected(env, code.c_str(), message);
  auto* worker = new LoadWorker(env, ctor, std::move(path), std::move(cfg), on_progress);
  Napi::Promise p = worker->promise();
  worker->Queue();
  return p;
}

}  // namespace

void register_model(Napi::Env env, Napi::Object exports) {
  auto* ctor = new Napi::FunctionReference(Napi::Persistent(NativeModel::define(env)));
  env.AddCleanupHook([ctor] { delete ctor; });
  exports.Set("loadModel", Napi::Function::New(env, load_model, "loadModel", ctor));
}

}  // namespace tdm::addon
