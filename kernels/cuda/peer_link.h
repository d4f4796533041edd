// NCCL links between the GPUs of a pipeline's ranks (kernels/backend.h, PeerLink). NCCL is loaded
// when a pipeline first asks for it (dlopen of libnccl.so.2, or $TIERGEN_NCCL_LIBRARY): a CUDA
// build runs without it, its hidden states then crossing through host memory.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "kernels/backend.h"

namespace tiergen::kernels::cuda {

// Links from `device`, ordered after and before the work of `compute` (the backend's stream).
// Null when NCCL cannot be used here, with `why_not` saying why (not found, too old, built
// without its header).
std::unique_ptr<PeerConnector> make_nccl_connector(int device, cudaStream_t compute, std::string& why_not);

}  // namespace tiergen::kernels::cuda
