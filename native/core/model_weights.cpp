// Binding of GGUF tensors to the forward pass's weights (see model_weights.h). Tensor
// names and shapes follow llama.cpp's per-architecture loaders (src/models/*.cpp). Then the
// placement of the bound tensors on a device under a memory budget.
#include "core/model_weights.h"

#include <algorithm>
#include <string>
#include <unordered_map>

#include "core/error.h"
#include "core/ggml_types.h"
#include "cpu/quants.h"

namespace tdm {

namespace {

std::string shape_str(const std::vector<uint64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

std::vector<uint64_t> trimmed(std::vector<uint64_t> ne) {
  while (ne.size() > 1 && ne.back() == 1) ne.pop_back();
  return ne;
}

class Binder {
 public:
  Binder(const GgufFile& f, uint64_t* bytes) : f_(f), bytes_(bytes) {}

  const GgufTensor* find(const std::string& name, const std::vector<uint64_t>& shape, bool required) {
    const GgufTensor* t = f_.find_tensor(name);
    if (t == nullptr) {
      if (required) throw Error(code::bad_gguf, "the model file has no tensor '" + name + "' (expected shape " + shape_str(shape) + ")");
      return nullptr;
    }
    if (trimmed(t->ne) != trimmed(shape))
      throw Error(code::bad_gguf, "tensor '" + name + "' has shape " + shape_str(t->ne) + " but the hyperparameters give " + shape_str(shape));
    *bytes_ += t->n_bytes;
    return t;
  }

  // A matrix (or stack of matrices) of any computable type: shape {n_cols, n_rows[, n_mats]}.
  tdm_weight matrix(const std::string& name, std::vector<uint64_t> shape, bool required = true) {
    tdm_weight w{};
    const GgufTensor* t = find(name, shape, required);
    if (t == nullptr) return w;
    const TypeTraits* tt = type_traits(t->type);
    if (tt == nullptr || !tt->computable)
      throw Error(code::unsupported, "tensor '" + name + "' has type " + (tt ? tt->name : std::to_string(t->type)) +
                                         ", which tandem cannot compute with yet");
    vec_dot_type(GgmlType(t->type));  // throws TDM_UNSUPPORTED for a type without a dot product
    while (shape.size() < 3) shape.push_back(1);
    w.data = f_.tensor_data(*t);
    w.type = t->type;
    w.n_cols = int64_t(shape[0]);
    w.n_rows = int64_t(shape[1]);
    w.n_mats = int64_t(shape[2]);
    w.row_bytes = row_bytes(*tt, shape[0]);
    w.mat_bytes = w.row_bytes * size_t(shape[1]);
    return w;
  }

  VecF32 vec(const std::string& name, uint64_t n, bool required = true) { return vec2(name, n, 1, required); }

  // An f32 tensor of n_rows rows of n floats (per-expert biases), as one flat vector.
  VecF32 vec2(const std::string& name, uint64_t n, uint64_t n_rows, bool required = true) {
    VecF32 v;
    const GgufTensor* t = find(name, {n, n_rows}, required);
    if (t == nullptr) return v;
    if (t->type != uint32_t(GgmlType::F32))
      throw Error(code::unsupported, "tensor '" + name + "' must be f32 (norm weights and biases are f32 in GGUF files)");
    v.data = reinterpret_cast<const float*>(f_.tensor_data(*t));
    v.n = int64_t(n * n_rows);
    return v;
  }

 private:
  const GgufFile& f_;
  uint64_t* bytes_;
};

std::string blk(int64_t i, const char* name) { return "blk." + std::to_string(i) + "." + name; }

}  // namespace

ModelWeights bind_weights(std::shared_ptr<GgufFile> file, const Hparams& hp) {
  ModelWeights m;
  m.file = file;
  Binder b(*file, &m.bytes);
  const uint64_t E = uint64_t(hp.n_embd), V = uint64_t(hp.n_vocab);
  const uint64_t q_dim = uint64_t(hp.n_head * hp.head_dim);
  const uint64_t k_dim = uint64_t(hp.n_head_kv * hp.head_dim);
  const uint64_t v_dim = uint64_t(hp.n_head_kv * hp.head_dim_v);
  const uint64_t o_dim = uint64_t(hp.n_head * hp.head_dim_v);

  m.tok_embd = b.matrix("token_embd.weight", {E, V});
  m.output_norm = b.vec("output_norm.weight", E);
  m.output = hp.tied_embeddings ? m.tok_embd : b.matrix("output.weight", {E, V});

  m.layers.resize(size_t(hp.n_layer));
  for (int64_t i = 0; i < hp.n_layer; ++i) {
    LayerWeights& L = m.layers[size_t(i)];
    L.attn_norm = b.vec(blk(i, "attn_norm.weight"), E);
    L.wq = b.matrix(blk(i, "attn_q.weight"), {E, q_dim});
    L.wk = b.matrix(blk(i, "attn_k.weight"), {E, k_dim});
    L.wv = b.matrix(blk(i, "attn_v.weight"), {E, v_dim});
    L.wo = b.matrix(blk(i, "attn_output.weight"), {o_dim, E});
    L.bo = b.vec(blk(i, "attn_output.bias"), E, false);
    if (hp.has_qkv_bias) {
      L.bq = b.vec(blk(i, "attn_q.bias"), q_dim);
      L.bk = b.vec(blk(i, "attn_k.bias"), k_dim);
      L.bv = b.vec(blk(i, "attn_v.bias"), v_dim);
    }
    if (hp.has_qk_norm) {
      // olmoe normalises the whole Q and K projections; qwen3 and qwen3moe each head.
      L.qk_norm_per_head = hp.arch != Arch::olmoe;
      L.q_norm = b.vec(blk(i, "attn_q_norm.weight"), L.qk_norm_per_head ? uint64_t(hp.head_dim) : q_dim);
      L.k_norm = b.vec(blk(i, "attn_k_norm.weight"), L.qk_norm_per_head ? uint64_t(hp.head_dim) : k_dim);
    }
    // gpt-oss calls the norm before its experts post_attention_norm.
    L.ffn_norm = b.vec(blk(i, hp.arch == Arch::gpt_oss ? "post_attention_norm.weight" : "ffn_norm.weight"), E);
    if (hp.has_post_norms) {
      L.attn_post_norm = b.vec(blk(i, "post_attention_norm.weight"), E);
      L.ffn_post_norm = b.vec(blk(i, "post_ffw_norm.weight"), E);
    }
    if (hp.has_attn_sinks) L.attn_sinks = b.vec(blk(i, "attn_sinks.weight"), uint64_t(hp.n_head));
    if (!hp.is_moe()) {
      L.ffn_gate = b.matrix(blk(i, "ffn_gate.weight"), {E, uint64_t(hp.n_ff)});
      L.ffn_up = b.matrix(blk(i, "ffn_up.weight"), {E, uint64_t(hp.n_ff)});
      L.ffn_down = b.matrix(blk(i, "ffn_down.weight"), {uint64_t(hp.n_ff), E});
      for (const char* bias : {"ffn_gate.bias", "ffn_up.bias", "ffn_down.bias"})
        if (file->find_tensor(blk(i, bias)) != nullptr)
          throw Error(code::unsupported, "tensor '" + blk(i, bias) + "': FFN biases are not supported");
      continue;
    }
    const uint64_t X = uint64_t(hp.n_expert), F = uint64_t(hp.n_ff_expert);
    L.gate_inp = b.matrix(blk(i, "ffn_gate_inp.weight"), {E, X});
    L.gate_exps = b.matrix(blk(i, "ffn_gate_exps.weight"), {E, F, X});
    L.up_exps = b.matrix(blk(i, "ffn_up_exps.weight"), {E, F, X});
    L.down_exps = b.matrix(blk(i, "ffn_down_exps.weight"), {F, E, X});
    if (hp.has_expert_bias) {
      L.gate_inp_b = b.vec(blk(i, "ffn_gate_inp.bias"), X);
      L.gate_exps_b = b.vec2(blk(i, "ffn_gate_exps.bias"), F, X);
      L.up_exps_b = b.vec2(blk(i, "ffn_up_exps.bias"), F, X);
      L.down_exps_b = b.vec2(blk(i, "ffn_down_exps.bias"), E, X);
    }
    if (hp.has_shared_expert) {
      const uint64_t S = uint64_t(hp.n_ff_shared);
      L.gate_inp_shexp = b.matrix(blk(i, "ffn_gate_inp_shexp.weight"), {E, 1}, hp.arch == Arch::qwen2moe);
      L.gate_shexp = b.matrix(blk(i, "ffn_gate_shexp.weight"), {E, S});
      L.up_shexp = b.matrix(blk(i, "ffn_up_shexp.weight"), {E, S});
      L.down_shexp = b.matrix(blk(i, "ffn_down_shexp.weight"), {S, E});
    }
  }
  return m;
}

}  // namespace tdm

namespace tdm {

tdm_weight bias_stack(const VecF32& v, int64_t n_cols) {
  tdm_weight w{};
  if (!v) return w;
  w.data = v.data;
  w.type = uint32_t(GgmlType::F32);
  w.n_cols = n_cols;
  w.n_rows = 1;
  w.n_mats = v.n / n_cols;
  w.row_bytes = w.mat_bytes = size_t(n_cols) * sizeof(float);
  return w;
}

namespace {

size_t matrix_bytes(const tdm_weight& w) { return w.mat_bytes * size_t(w.n_mats); }

// Copies tensors to the device while the budget lasts; one copy per source tensor, so tied
// embeddings share theirs.
class Placer {
 public:
  Placer(Backend* device, int64_t budget, WeightPlacement* out) : dev_(device), budget_(budget), out_(out) {}

  void vec(VecF32& v) {
    if (!v) return;
    v.data = static_cast<const float*>(copy(v.data, size_t(v.n) * sizeof(float)));
  }

  // Places the present matrices of `ws` together, or none of them when they do not fit.
  void matrices(std::initializer_list<tdm_weight*> ws) {
    size_t need = 0;
    for (tdm_weight* w : ws)
      if (present(*w) && copies_.count(w->data) == 0) need += matrix_bytes(*w);
    if (budget_ >= 0 && double(used_) + double(need) > double(budget_)) return;
    for (tdm_weight* w : ws) {
      if (!present(*w)) continue;
      w->data = copy(w->data, matrix_bytes(*w));
      out_->resident.insert(w->data);
    }
  }

  uint64_t used() const { return used_; }
  // Budget left (bytes), or -1 when unlimited.
  int64_t left() const { return budget_ < 0 ? -1 : std::max<int64_t>(0, budget_ - int64_t(used_)); }
  // Counts `bytes` allocated elsewhere against the budget.
  void charge(uint64_t bytes) { used_ += bytes; }

 private:
  const void* copy(const void* src, size_t bytes) {
    auto it = copies_.find(src);
    if (it != copies_.end()) return it->second;
    DeviceBuffer buf(dev_, bytes);
    dev_->check(dev_->fn().copy_h2d(dev_->ctx(), buf.data(), src, bytes, nullptr), "copy_h2d");
    used_ += bytes;
    const void* p = buf.data();
    copies_.emplace(src, p);
    out_->buffers.push_back(std::move(buf));
    return p;
  }

  Backend* dev_;
  int64_t budget_;
  WeightPlacement* out_;
  uint64_t used_ = 0;
  std::unordered_map<const void*, const void*> copies_;  // source address -> device copy
};

}  // namespace

WeightPlacement place_weights(const ModelWeights& w, Backend* device, int64_t budget_bytes,
                              const std::function<uint64_t(int64_t)>& routed_experts) {
  WeightPlacement p;
  p.exec = w;
  ModelWeights& e = p.exec;
  Placer placer(device, budget_bytes, &p);
  placer.vec(e.output_norm);
  for (LayerWeights& L : e.layers)
    for (VecF32* v : {&L.attn_norm, &L.bq, &L.bk, &L.bv, &L.bo, &L.q_norm, &L.k_norm, &L.ffn_norm, &L.attn_post_norm, &L.ffn_post_norm, &L.attn_sinks, &L.gate_inp_b,
                      &L.gate_exps_b, &L.up_exps_b, &L.down_exps_b})
      placer.vec(*v);
  for (LayerWeights& L : e.layers) placer.matrices({&L.wq, &L.wk, &L.wv, &L.wo});
  for (LayerWeights& L : e.layers) {
    placer.matrices({&L.ffn_gate, &L.ffn_up, &L.ffn_down});
    placer.matrices({&L.gate_inp, &L.gate_inp_shexp});
    placer.matrices({&L.gate_shexp, &L.up_shexp, &L.down_shexp});
  }
  placer.matrices({&e.output});
  if (routed_experts) placer.charge(routed_experts(placer.left()));
  else
    for (LayerWeights& L : e.layers) placer.matrices({&L.gate_exps, &L.up_exps, &L.down_exps});
  placer.matrices({&e.tok_embd});
  // Tied embeddings: one tensor under two names; whichever was placed, both use the copy.
  if (w.output.data == w.tok_embd.data) {
    if (p.on_device(e.output)) e.tok_embd = e.output;
    else if (p.on_device(e.tok_embd)) e.output = e.tok_embd;
  }
  if (device->fn().synchronize != nullptr) device->check(device->fn().synchronize(device->ctx()), "synchronize");
  p.device_bytes = placer.used();

  std::unordered_set<const void*> counted;
  auto tally = [&](const tdm_weight& x) {
    if (!present(x) || !counted.insert(x.data).second) return;
    if (p.on_device(x)) {
      p.device_tensors++;
    } else {
      p.host_tensors++;
      p.host_bytes += matrix_bytes(x);
    }
  };
  tally(e.tok_embd);
  tally(e.output);
  for (const LayerWeights& L : e.layers)
    for (const tdm_weight* x : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down, &L.gate_inp, &L.gate_exps,
                                &L.up_exps, &L.down_exps, &L.gate_inp_shexp, &L.gate_shexp, &L.up_shexp, &L.down_shexp})
      tally(*x);
  return p;
}

}  // namespace tdm
