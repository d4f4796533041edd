// The backend seam: every op the engine runs has one signature here, implemented by the CPU
// backend (kernels/cpu, the reference and also fast) and the CUDA backend (kernels/cuda). All
// tensors passed to a backend's op live in that backend's memory tier (host-addressable tiers for
// the CPU backend, Tier::Gpu for CUDA); shapes are checked by each op and a mismatch is an
// InternalError naming the op. The engine never calls a kernel except through this interface.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "runtime/core/tensor.h"

namespace tiergen::kernels {

enum class DeviceKind { Cpu, Cuda };

// The queues a backend runs work on (see Backend::copy_async).
enum class Lane : uint8_t { Compute, Load, Store };
// A point in a lane's queue (a CUDA event); opaque outside the backend that made it.
class Fence {
 public:
  virtual ~Fence() = default;
};

// dst = src converted to dst's dtype, on the host (same element count; a plain copy when the dtypes
// agree). InternalError when either is not host-addressable.
void convert_on_host(Tensor& dst, const Tensor& src);

// Pointwise activations. GeluTanh is the tanh approximation (BLOOM, gelu_new); Gelu the exact erf.
enum class Act { Relu, Gelu, GeluTanh, Silu };

// The CPU reference's view of one sequence in a ragged attention batch (kernels/cpu/attention.cc):
// its queries are rows
// [q_begin, q_begin + q_len) of q/out, its keys and values are the first kv_len rows of k and v
// (the cache, already holding the new tokens). Query i sits at position kv_len - q_len + i and
// attends causally to keys 0..that position.
struct AttentionSeq {
  int64_t q_begin = 0;
  int64_t q_len = 0;
  int64_t kv_len = 0;
  Tensor k;  // (capacity, n_kv_heads * head_dim)
  Tensor v;  // (capacity, n_kv_heads * head_dim)
};

// The CPU reference's parameters (host slopes), as kernels/cpu/attention.cc reads them.
struct AttentionParams {
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  float scale = 1.0f;
  const float* alibi_slopes = nullptr;  // (n_heads) or null
};

// One forward step's batch layout, built once per step on the host (runtime/generate) and uploaded
// once to the backend's tier (Backend::upload_step); every layer reads the uploaded copy, none
// rebuilds it. Rows of the activations are the new tokens of all sequences, concatenated.
struct StepPlan {
  std::vector<int32_t> token_ids;   // (T)
  std::vector<int32_t> positions;   // (T) position of each row in its sequence
  std::vector<int32_t> row_slot;    // (T) KV cache slot of each row's sequence
  std::vector<int32_t> q_begin;     // (S) first row of each sequence
  std::vector<int32_t> q_len;       // (S) its new tokens
  std::vector<int32_t> kv_len;      // (S) its cached tokens once this step's are written
  std::vector<int32_t> slot;        // (S) its KV cache slot
  std::vector<int32_t> logit_rows;  // (R) rows whose logits are wanted
  int64_t num_tokens() const { return static_cast<int64_t>(token_ids.size()); }
  int64_t num_seqs() const { return static_cast<int64_t>(q_len.size()); }
  // Appends a sequence whose new tokens follow `past_len` cached ones in KV slot `slot`; returns
  // the row of its first new token.
  int64_t add_sequence(std::span<const int32_t> tokens, int64_t past_len, int64_t slot_index) {
    const int64_t row = num_tokens();
    const auto n = static_cast<int32_t>(tokens.size());
    for (int32_t i = 0; i < n; ++i) {
      token_ids.push_back(tokens[static_cast<size_t>(i)]);
      positions.push_back(static_cast<int32_t>(past_len) + i);
      row_slot.push_back(static_cast<int32_t>(slot_index));
    }
    q_begin.push_back(static_cast<int32_t>(row));
    q_len.push_back(n);
    kv_len.push_back(static_cast<int32_t>(past_len) + n);
    slot.push_back(static_cast<int32_t>(slot_index));
    return row;
  }
  // Inline, like everything here the CUDA backend module uses: it links no other part of tiergen.
  int max_q_len() const { return q_len.empty() ? 0 : *std::max_element(q_len.begin(), q_len.end()); }
  int max_kv_len() const { return kv_len.empty() ? 0 : *std::max_element(kv_len.begin(), kv_len.end()); }
};

// A StepPlan in a backend's tier: I32 tensors of the shapes above (host views on the CPU).
struct StepTensors {
  const StepPlan* plan = nullptr;  // the host copy (sizes, maxima, CPU reads)
  Tensor token_ids, positions, row_slot, q_begin, q_len, kv_len, slot, logit_rows;
};

// One layer's KV cache: K and V of (slots * capacity, n_kv_heads * head_dim) in the cache dtype;
// slot s holds rows [s * capacity, (s + 1) * capacity).
struct LayerKv {
  Tensor k, v;
  int64_t capacity = 0;
};

struct AttentionShape {
  int n_heads = 0;
  int n_kv_heads = 0;  // n_heads % n_kv_heads == 0 (GQA / MQA when smaller)
  int head_dim = 0;
  float scale = 1.0f;   // applied to q·k
  Tensor alibi_slopes;  // F32 (n_heads) in the backend's tier, or undefined: adds slope_h * key_position
};

// A link from this rank's device straight to one other rank's device (NCCL between two GPUs): the
// pipeline's hidden states cross it without passing through host memory. A link joins two ranks,
// the first of which (`me` 0) sends and the second receives. Transfers run on the link's own queue,
// each after the compute lane's work queued before it, and compute queued after a receive waits for
// it. The host waits only for the library to take a call (the first one sets up the connection)
// and in wait(); each returns false once its deadline has passed first, the link then aborted: a
// peer that died leaves nothing spinning on the device. While waiting each calls the link's `poll`
// (which may throw: another rank's failure report); a library error is a DeviceError.
class PeerLink {
 public:
  virtual ~PeerLink() = default;  // ends the link, aborting what is still in flight
  // Queues `x` (this backend's tier) to go to the peer; `x` is kept alive until it has gone.
  [[nodiscard]] virtual bool send(const Tensor& x, std::chrono::milliseconds timeout) = 0;
  // Queues a receive into `x` (this backend's tier; the peer sends the same number of bytes).
  [[nodiscard]] virtual bool recv(Tensor& x, std::chrono::milliseconds timeout) = 0;
  // Waits until the join and every transfer queued so far are done.
  [[nodiscard]] virtual bool wait(std::chrono::milliseconds timeout) = 0;
};

// How a backend makes PeerLinks (kernels/cuda/peer_link.cc for NCCL).
class PeerConnector {
 public:
  virtual ~PeerConnector() = default;
  // The device as a peer sees it, "host/bus id", the host told apart as the link library does
  // (for NCCL: $NCCL_HOSTID, else the host name and boot id): two ranks with the same address share
  // a device, which a link cannot join.
  virtual std::string address() const = 0;
  // A new link's key (NCCL's unique id), made by the rank that sends and given to the other.
  virtual std::vector<std::byte> new_key() = 0;
  // Joins the link `key` as `me` (0: the sender, 1: the receiver). Returns at once; the link's
  // first wait() completes the join, which needs both ranks to have called this. `poll` must stay
  // callable as long as the link lives.
  virtual std::unique_ptr<PeerLink> join(std::span<const std::byte> key, int me, std::function<void()> poll) = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual DeviceKind kind() const = 0;
  virtual std::string name() const = 0;

  // ---- memory ----
  // A zero-filled tensor in this backend's tier (caches, weights: what lives long).
  virtual Tensor alloc(Shape shape, DType dtype) = 0;
  // An uninitialised activation in this backend's tier, from memory reused across steps: after the
  // first step of a block shape nothing is allocated from the system (no cudaMalloc in the loop).
  virtual Tensor scratch(Shape shape, DType dtype) = 0;
  // dst = src, same dtype and element count; either side may be host or this backend's tier.
  virtual void copy(Tensor& dst, const Tensor& src) = 0;
  // Waits for all work queued on this backend (a no-op on CPU).
  virtual void synchronize() = 0;
  // Free bytes of the backend's own memory (the GPU's), or nothing where it is the host's.
  virtual std::optional<uint64_t> free_memory() const { return std::nullopt; }
  // The most of its own memory the process has held at once (GPU), or nothing on the host.
  virtual std::optional<uint64_t> peak_memory() const { return std::nullopt; }
  // Starts peak_memory() over from what is held now (a measurement's buffers are not the run's).
  virtual void reset_peak_memory() {}
  // Caps what the backend takes of its own memory (GPU; a --gpu-mem budget): an allocation past
  // it is an OutOfMemoryError, also where the device has more free. Nothing: no cap. The host
  // backend has no cap of its own (the memory plan checks host budgets before a run).
  virtual void set_memory_limit(std::optional<uint64_t> bytes) { (void)bytes; }
  // The step's layout in this backend's tier, uploaded once (one copy on the GPU).
  virtual StepTensors upload_step(const StepPlan& plan) = 0;
  // A host tensor's copy in this backend's tier, converted to `dtype` (weights, tables).
  Tensor upload(const Tensor& host, DType dtype);

  // ---- transfer lanes (the offloading engine's streaming) ----
  // Copies between tiers run on their own lanes beside compute, each lane in order: Load brings
  // weights and caches to the compute tier, Store takes them back. A Fence recorded on one lane
  // orders another lane after it without the host waiting; the host waits only where it must
  // reuse a host buffer. On the CPU every copy is done when copy_async returns and fences are null.
  // Host memory the lanes copy from and to without staging (page-locked on CUDA; a transfer from
  // pageable memory is staged by the driver and serialises with the host).
  virtual Tensor alloc_host(Shape shape, DType dtype) { return Tensor::empty(std::move(shape), dtype); }
  // dst = src (same dtype and size) queued on `lane`; a host side must stay untouched until a fence
  // recorded on the lane after this has passed.
  virtual void copy_async(Tensor& dst, const Tensor& src, Lane lane) {
    (void)lane;
    copy(dst, src);
  }
  // A fence after everything queued on `lane` so far (null where copies are synchronous).
  virtual std::shared_ptr<Fence> record(Lane lane) {
    (void)lane;
    return nullptr;
  }
  // Work queued on `lane` after this starts once `fence` has passed (null: at once).
  virtual void wait(Lane lane, const std::shared_ptr<Fence>& fence) {
    (void)lane;
    (void)fence;
  }
  // The host waits for `fence`; a DeviceError naming `what` once `deadline` has passed (a device
  // that stopped answering is an error, not a hang).
  virtual void host_wait(const std::shared_ptr<Fence>& fence, std::chrono::milliseconds deadline,
                         const std::string& what) {
    (void)fence;
    (void)deadline;
    (void)what;
  }

  // Calls fn on a driver thread once `lane` reaches this point (for traces; CPU: at once). fn must
  // be quick and must not call the backend.
  virtual void on_lane(Lane lane, std::function<void()> fn) {
    (void)lane;
    fn();
  }

  // ---- peers ----
  // This backend's links to other ranks' devices, or null where it has none (the CPU backend; a
  // GPU without NCCL, `why_not` then says why): the pipeline's hidden states then cross through
  // host memory over the ranks' transport.
  virtual PeerConnector* peers(std::string& why_not) {
    why_not = name() + " moves tensors to other ranks through host memory";
    return nullptr;
  }

  // ---- ops ----
  // out (M, N) = x (M, K) · w (N, K)^T + bias (N), accumulated in f32.
  // CPU: x, out f32; w f32, f16 or bf16. CUDA: x and w of one dtype, out that dtype or f32.
  virtual void linear(Tensor& out, const Tensor& x, const Tensor& w, const Tensor* bias) = 0;
  // out = act(x · w^T + bias): linear then activation_, which a backend may fuse (the CUDA backend
  // applies ReLU in the GEMM's epilogue, saving a pass over an (M, F) activation).
  virtual void linear_act(Tensor& out, const Tensor& x, const Tensor& w, const Tensor* bias, Act act) {
    linear(out, x, w, bias);
    activation_(out, act);
  }
  // out (G, M, N)[g] = x (M, K) · w_g^T + bias_g for the G projections stacked in w (G * N, K) and
  // bias (G * N): q, k and v, or gate and up, of one input in one call, which a backend may run as
  // one batched GEMM (one launch, G times the blocks to spread over the device). Here: G linears.
  virtual void linear_stacked(Tensor& out, const Tensor& x, const Tensor& w, const Tensor* bias) {
    const int64_t G = out.dim(0), M = out.dim(1), N = out.dim(2);
    for (int64_t g = 0; g < G; ++g) {
      Tensor out_g = out.slice_rows(g, g + 1).reshape({M, N});
      const Tensor bias_g = bias ? bias->slice_rows(g * N, (g + 1) * N) : Tensor();
      linear(out_g, x, w.slice_rows(g * N, (g + 1) * N), bias ? &bias_g : nullptr);
    }
  }
  // out (M, N) += x · w^T + bias: a projection and the residual add after it, which a backend may
  // fuse into the GEMM (one pass over out fewer). Here: linear into a scratch, then add_ (the
  // product rounded to out's dtype, then added, as every fused form may do too).
  virtual void linear_add_(Tensor& out, const Tensor& x, const Tensor& w, const Tensor* bias) {
    Tensor y = scratch(out.shape(), out.dtype());
    linear(y, x, w, bias);
    add_(out, y);
  }
  // out (M, C) = x / sqrt(mean(x^2) + eps) * w (C)
  virtual void rms_norm(Tensor& out, const Tensor& x, const Tensor& w, float eps) = 0;
  // out (M, C) = (x - mean) / sqrt(var + eps) * w (C) + b (C)
  virtual void layer_norm(Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b, float eps) = 0;
  // out (T, C) = table (V, C)[ids (T) + offset], converted to out's dtype. Ids were checked by the
  // generator before the step (kernels do not validate them).
  virtual void embedding(Tensor& out, const Tensor& table, const Tensor& ids, int32_t offset) = 0;
  // x (M, C) += y (M, C)
  virtual void add_(Tensor& x, const Tensor& y) = 0;
  // In place, x (M, C) = act(x).
  virtual void activation_(Tensor& x, Act act) = 0;
  // gate (M, F) = silu(gate) * up (M, F)   (SwiGLU)
  virtual void silu_mul_(Tensor& gate, const Tensor& up) = 0;
  // Rotary embedding in place on x (T, H * head_dim), rotate-half layout (GPT-NeoX / HF Llama):
  // for i < head_dim/2, (x_i, x_{i+half}) rotated by positions[t] * inv_freq[i] (F32, head_dim/2).
  virtual void rope_(Tensor& x, int head_dim, const Tensor& positions, const Tensor& inv_freq) = 0;
  // Appends the step's keys and values (T, n_kv_heads * head_dim) at (row_slot, positions).
  virtual void write_kv(LayerKv& cache, const Tensor& k, const Tensor& v, const StepTensors& step) = 0;
  // out (T, n_heads * head_dim) = causal softmax(scale * q k^T + alibi) v over each sequence's cache.
  virtual void attention(Tensor& out, const Tensor& q, const LayerKv& cache, const StepTensors& step,
                         const AttentionShape& shape) = 0;
  // out (R, C) = x (T, C)[step.logit_rows]
  virtual void gather_rows(Tensor& out, const Tensor& x, const Tensor& rows) = 0;
  // ids (R) I32 = the column of each row's largest value in logits (R, V): the first one on ties,
  // 0 for a row that starts with NaN, NaN elsewhere skipped (std::max_element's answers, which
  // the CPU sampler gives). Greedy selection where the logits live, so they need not cross to the host.
  virtual void argmax_rows(Tensor& ids, const Tensor& logits) = 0;

  // ---- measurement ----
  // Reads every byte of x, as fast as the backend's memory allows, and writes nothing of note: the
  // memory read rate of the roofline bound is timed over it (runtime/generate/rates.h).
  virtual void read_probe(const Tensor& x) = 0;
};

std::unique_ptr<Backend> make_cpu_backend();
// True when this build has CUDA and a device is visible.
bool cuda_available();
// Throws UnsupportedError when built without CUDA, when the CUDA backend module cannot be loaded,
// or when no device is visible. The CUDA backend lives in a module, libtiergen_cuda.so, loaded on
// first use from the executable's ../lib or its own folder (or $TIERGEN_CUDA_MODULE); a process
// that links it (the GPU tests) uses its own copy. CPU-only runs never map CUDA or cuBLAS, which
// alone take 0.3 s and over 200 MB of resident memory to load.
std::unique_ptr<Backend> make_cuda_backend(int device = 0);

}  // namespace tiergen::kernels
