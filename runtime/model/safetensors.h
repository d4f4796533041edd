// safetensors reader: one file, memory-mapped, validated before any tensor is handed out; and a
// Checkpoint over a model folder (model.safetensors, or shards listed by
// model.safetensors.index.json). Tensors are zero-copy Tier::Mmap views that keep the mapping alive.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/tensor.h"

namespace tiergen {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0;  // byte offsets within the data section (after the header)
  uint64_t end = 0;
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // sorted by begin offset
  std::map<std::string, std::string> metadata;
};

// Validates a header against the size of the data section that follows it. Throws FormatError
// naming `origin` and the problem: not UTF-8 JSON, not an object, unknown dtype, begin > end,
// size != shape x dtype (overflow-checked), gaps or overlaps, data past the end, trailing bytes.
SafetensorsHeader parse_safetensors_header(std::string_view header_json, uint64_t data_size,
                                           const std::string& origin);

class SafetensorsFile {
 public:
  // Maps and validates the whole file (8-byte little-endian header length, header, data).
  static std::shared_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  // Validates a whole file already in memory (used by the fuzzer and tests); no mapping.
  static SafetensorsHeader parse_buffer(std::string_view bytes, const std::string& origin);

  const std::filesystem::path& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  const TensorInfo* find(std::string_view name) const;
  // Zero-copy view; NotFoundError naming the file when absent.
  Tensor tensor(std::string_view name) const;

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> index_;
  std::shared_ptr<Storage> mapping_;  // the whole file, Tier::Mmap
  uint64_t data_offset_ = 0;
};

// A model folder's weights.
class Checkpoint {
 public:
  // Opens model.safetensors or, when present, model.safetensors.index.json and its shards.
  // Shard names that are absolute, contain "..", or are not regular files, and tensors missing
  // from the shard that the index names, are FormatErrors.
  static Checkpoint open(const std::filesystem::path& model_dir);

  bool contains(std::string_view name) const;
  Tensor get(std::string_view name) const;  // NotFoundError naming the folder and tensor
  std::vector<std::string> names() const;
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t, std::less<>> where_;  // tensor name -> index into files_
};

}  // namespace tiergen
