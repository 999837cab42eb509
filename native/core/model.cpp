// Model loading (see model.h): map, bind, page in with progress, start backends, allocate KV.
#include <algorithm>

#include "core/error.h"
#include "core/ggml_types.h"
#include "core/model.h"

namespace tdm {

namespace {

// Reads one byte per page of every tensor so the first step does not stall on page faults,
// reporting the fraction of weight bytes touched.
void page_in(const GgufFile& f, const std::function<void(double)>& progress) {
  uint64_t total = 0;
  for (const GgufTensor& t : f.tensors()) total += t.n_bytes;
  if (total == 0) {
    if (progress) progress(1.0);
    return;
  }
  uint64_t done = 0;
  double reported = -1.0;
  volatile uint8_t sink = 0;
  for (const GgufTensor& t : f.tensors()) {
    const uint8_t* p = f.tensor_data(t);
    for (uint64_t off = 0; off < t.n_bytes; off += 4096) {
      sink ^= p[off];
      if (((off >> 12) & 1023) == 1023 && progress) {
        const double frac = double(done + off) / double(total);
        if (frac - reported >= 0.01) {
          progress(frac);
          reported = frac;
        }
      }
    }
    done += t.n_bytes;
  }
  (void)sink;
  if (progress) progress(1.0);
}

}  // namespace

std::shared_ptr<Model> Model::load(const std::string& path, const ModelConfig& cfg,
                                   const std::function<void(double)>& progress) {
  validate_hparams(cfg.hp);
  if (cfg.kv_blocks_device < 0 || cfg.kv_blocks_host < 0) throw Error(code::bad_argument, "kvBlocks counts must not be negative");
  if (cfg.kv_blocks_device + int64_t(cfg.kv_blocks_host) == 0) throw Error(code::bad_argument, "kvBlocks must give at least one block");
  std::shared_ptr<Model> m(new Model());
  m->hp_ = cfg.hp;
  std::shared_ptr<GgufFile> file = GgufFile::open(path);
  m->weights_ = bind_weights(file, m->hp_);
  page_in(*file, progress);

  m->cpu_ = Backend::create_cpu(cfg.threads, cfg.cpu_variant.empty() ? nullptr : cfg.cpu_variant.c_str());
  m->device_ = m->cpu_.get();
  m->linear_ = m->cpu_.get();
  // f16 K and V, as llama.cpp's default cache type, so attention tracks llama.cpp.
  m->layout_ = KvLayout::make(m->hp_, cfg.kv_block_tokens, uint32_t(GgmlType::F16));
  m->pools_[int(KvTier::device)] = KvPool(m->device_, m->layout_, cfg.kv_blocks_device);
  m->pools_[int(KvTier::host)] = KvPool(m->cpu_.get(), m->layout_, cfg.kv_blocks_host);
  return m;
}

std::vector<std::string> Model::backends() const {
  std::vector<std::string> out{cpu_->kind()};
  if (device_ != cpu_.get()) out.push_back(device_->kind());
  return out;
}

}  // namespace tdm
