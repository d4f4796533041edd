// CPU kernels: the reference implementation of every op (OpenMP across cores, GEMM through
// OpenBLAS). Plain functions over host tensors; kernels/cpu/cpu_backend.cc wires them into the
// Backend interface. Shapes are checked here, once, with messages naming the op.
#pragma once

#include <span>

#include "kernels/backend.h"
#include "kernels/shape_check.h"

namespace tiergen::kernels::cpu {

void linear(Tensor& out, const Tensor& x, const Tensor& w, const Tensor* bias);
void rms_norm(Tensor& out, const Tensor& x, const Tensor& w, float eps);
void layer_norm(Tensor& out, const Tensor& x, const Tensor& w, const Tensor& b, float eps);
void embedding(Tensor& out, const Tensor& table, std::span<const int32_t> ids);
void add_(Tensor& x, const Tensor& y);
void activation_(Tensor& x, Act act);
void silu_mul_(Tensor& gate, const Tensor& up);
void rope_(Tensor& x, int head_dim, std::span<const int64_t> positions, std::span<const float> inv_freq);
void write_rows(Tensor& cache, int64_t row0, const Tensor& src);
void attention(Tensor& out, const Tensor& q, std::span<const AttentionSeq> seqs, const AttentionParams& p);

// Shape checks shared by the backends: throw InternalError naming `op` when violated.
void check_host(const char* op, const Tensor& t);

}  // namespace tiergen::kernels::cpu
