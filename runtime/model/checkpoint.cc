// Memory-mapped safetensors files, and model folders made of one file or of shards listed by an
// index. Header validation lives in safetensors_header.cc; this file owns the OS resources and the
// rules about which files a folder may name.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/core/error.h"
#include "runtime/model/safetensors.h"

namespace tiergen {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

// Closes the descriptor on every way out of open(); the mapping stays valid after close.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

uint64_t read_le_u64(const void* p) {
  const auto* b = static_cast<const unsigned char*>(p);
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(b[i]) << (8 * i);
  return v;
}

// tensor name -> shard file name, as model.safetensors.index.json lists them.
std::map<std::string, std::string> read_weight_map(const fs::path& index) {
  const std::string origin = index.string();
  std::error_code ec;
  if (!fs::is_regular_file(index, ec)) throw FormatError(origin + ": not a regular file");
  std::ifstream in(index, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) throw IoError("cannot read " + origin + ": " + errno_message(errno));

  json root;
  try {
    root = json::parse(text.str());
  } catch (const json::exception& e) {  // parse_error, and out_of_range for numbers like 1e400
    throw FormatError(origin + ": not valid JSON: " + e.what());
  }
  if (!root.is_object()) throw FormatError(origin + ": must be a JSON object, got " + root.type_name());
  auto wm = root.find("weight_map");
  if (wm == root.end() || !wm->is_object())
    throw FormatError(origin + ": lacks a \"weight_map\" object (tensor name -> shard file)");

  std::map<std::string, std::string> out;
  for (const auto& [tensor, shard] : wm->items()) {
    if (!shard.is_string())
      throw FormatError(origin + ": weight_map entry for '" + tensor + "' must be a file name, got " +
                        shard.dump());
    out.emplace(tensor, shard.get<std::string>());
  }
  return out;
}

// The index comes from whoever published the model; it must not make us open files outside the
// folder (absolute paths, "..") or anything but a regular file. Symlinks are followed because the
// Hugging Face cache stores snapshots as links into its blob store.
fs::path resolve_shard(const fs::path& dir, const fs::path& index, const std::string& shard) {
  auto reject = [&](const std::string& why) {
    throw FormatError(index.string() + ": shard \"" + shard + "\" " + why);
  };
  if (shard.empty()) reject("is an empty name");
  if (shard.find('\0') != std::string::npos) reject("contains a NUL byte");
  const fs::path rel(shard);
  if (rel.has_root_path()) reject("is an absolute path; shards must be inside the model folder");
  for (const fs::path& part : rel)
    if (part == "..") reject("contains \"..\"; shards must be inside the model folder");

  const fs::path full = dir / rel;
  std::error_code ec;
  const fs::file_status link = fs::symlink_status(full, ec);
  if (!fs::exists(link)) reject("does not exist (" + full.string() + ")");
  const fs::file_status target = fs::status(full, ec);
  if (!fs::exists(target)) reject("is a dangling symlink (" + full.string() + ")");
  if (fs::is_directory(target)) reject("is a directory, not a file");
  if (!fs::is_regular_file(target)) reject("is not a regular file");
  return full;
}

}  // namespace

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const fs::path& path) {
  static_assert(sizeof(size_t) >= sizeof(uint64_t), "mapping whole checkpoints needs a 64-bit address space");
  const std::string origin = path.string();
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw IoError("cannot open " + origin + ": " + errno_message(errno));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) throw IoError("cannot stat " + origin + ": " + errno_message(errno));
  if (!S_ISREG(st.st_mode)) throw IoError("cannot map " + origin + ": not a regular file");
  const auto size = static_cast<uint64_t>(st.st_size);
  // mmap refuses length 0, and a file this short is malformed anyway: report it as such.
  if (size < 8)
    throw FormatError(origin + ": file is " + std::to_string(size) +
                      " bytes, shorter than the 8-byte header length");

  // MAP_PRIVATE + PROT_READ: nothing we do can write back to the checkpoint. The file must not be
  // truncated by someone else while mapped (that would be SIGBUS, not an exception).
  void* base = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (base == MAP_FAILED)
    throw IoError("cannot mmap " + origin + " (" + std::to_string(size) + " bytes): " + errno_message(errno));

  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  // Owned from here on, so a validation error below unmaps it.
  file->mapping_ = Storage::wrap(base, size, Tier::Mmap, [base, size] { ::munmap(base, size); });
  file->path_ = path;
  file->header_ = parse_buffer(std::string_view(static_cast<const char*>(base), size), origin);
  file->data_offset_ = 8 + read_le_u64(base);
  for (size_t i = 0; i < file->header_.tensors.size(); ++i)
    file->index_.emplace(file->header_.tensors[i].name, i);
  return file;
}

SafetensorsFile::~SafetensorsFile() = default;

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

Tensor SafetensorsFile::tensor(std::string_view name) const {
  const TensorInfo* t = find(name);
  if (!t) throw NotFoundError("tensor '" + std::string(name) + "' not found in " + path_.string());
  return Tensor(mapping_, data_offset_ + t->begin, t->shape, t->dtype);
}

Checkpoint Checkpoint::open(const fs::path& model_dir) {
  Checkpoint ck;
  ck.dir_ = model_dir;
  const fs::path index = model_dir / kIndexName;
  const fs::path single = model_dir / kSingleName;
  std::error_code ec;

  std::map<std::string, std::string> weight_map;
  std::map<std::string, size_t> shard_file;  // shard name as the index spells it -> files_
  if (fs::exists(index, ec)) {
    weight_map = read_weight_map(index);
    std::map<std::string, size_t> by_path;  // normalised path -> files_, so "./a" and "a" map once
    for (const auto& [tensor, shard] : weight_map) {
      if (shard_file.count(shard)) continue;
      const fs::path full = resolve_shard(model_dir, index, shard);
      auto [it, added] = by_path.emplace(full.lexically_normal().string(), ck.files_.size());
      if (added) ck.files_.push_back(SafetensorsFile::open(full));
      shard_file.emplace(shard, it->second);
    }
  } else if (fs::exists(single, ec)) {
    ck.files_.push_back(SafetensorsFile::open(single));
  } else {
    throw NotFoundError("no checkpoint in " + model_dir.string() + ": neither " + kIndexName + " nor " +
                        kSingleName + " exists");
  }

  for (size_t i = 0; i < ck.files_.size(); ++i) {
    for (const TensorInfo& t : ck.files_[i]->header().tensors) {
      auto [it, added] = ck.where_.emplace(t.name, i);
      if (!added)
        throw FormatError("tensor '" + t.name + "' is in both " + ck.files_[it->second]->path().string() +
                          " and " + ck.files_[i]->path().string());
    }
  }
  // The index is what loaders trust to find a tensor; a stale entry would send them to a shard
  // that lacks it, so it is an error here rather than a NotFoundError much later.
  for (const auto& [tensor, shard] : weight_map) {
    if (!ck.files_[shard_file.at(shard)]->find(tensor))
      throw FormatError(index.string() + ": maps tensor '" + tensor + "' to shard \"" + shard +
                        "\", which does not contain it");
  }
  return ck;
}

bool Checkpoint::contains(std::string_view name) const { return where_.find(name) != where_.end(); }

Tensor Checkpoint::get(std::string_view name) const {
  auto it = where_.find(name);
  if (it == where_.end())
    throw NotFoundError("tensor '" + std::string(name) + "' not found in checkpoint " + dir_.string());
  return files_[it->second]->tensor(name);
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, file] : where_) out.push_back(name);
  return out;
}

}  // namespace tiergen
