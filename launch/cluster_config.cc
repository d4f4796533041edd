#include "launch/cluster_config.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <set>

#include "runtime/core/error.h"
#include "runtime/core/units.h"

namespace tiergen::cli {
namespace {

std::string where(const std::string& path, const YAML::Node& n) {
  return path + ":" + std::to_string(n.Mark().line + 1);
}

void only_keys(const std::string& path, const YAML::Node& map, const std::set<std::string>& keys, const char* what) {
  if (!map.IsMap()) throw FormatError(where(path, map) + ": " + what + " must be a mapping of keys to values");
  for (const auto& kv : map) {
    const auto key = kv.first.as<std::string>();
    if (!keys.count(key)) {
      std::string known;
      for (const auto& k : keys) known += (known.empty() ? "" : ", ") + k;
      throw FormatError(where(path, kv.first) + ": unknown key '" + key + "' in " + what + " (keys: " + known + ")");
    }
  }
}

template <class T>
std::optional<T> get(const std::string& path, const YAML::Node& map, const char* key, const char* type) {
  const YAML::Node n = map[key];
  if (!n) return std::nullopt;
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    throw FormatError(where(path, n) + ": '" + key + "' must be " + type);
  }
}

}  // namespace

std::vector<int64_t> ClusterConfig::first_layers() const {
  std::vector<int64_t> out;
  for (size_t s = 1; s < stages.size(); ++s)
    if (stages[s].first_layer) out.push_back(*stages[s].first_layer);
  if (!out.empty() && out.size() + 1 != stages.size())
    throw FormatError(path + ": first_layer is given for " + std::to_string(out.size()) + " of the " +
                      std::to_string(stages.size() - 1) + " stages after the first: give it for all of them or none");
  return out;
}

ClusterConfig load_cluster_config(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw NotFoundError("cluster config '" + path + "' does not exist or is not a file");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::ParserException& e) {
    throw FormatError(path + ":" + std::to_string(e.mark.line + 1) + ": not YAML: " + e.msg);
  } catch (const YAML::Exception& e) {
    throw IoError("cannot read cluster config '" + path + "': " + e.what());
  }
  ClusterConfig c;
  c.path = path;
  only_keys(path, root, {"micro_batches", "comm_timeout", "stages"}, "the cluster config");
  c.micro_batches = get<int>(path, root, "micro_batches", "a whole number");
  if (c.micro_batches && *c.micro_batches < 1)
    throw FormatError(where(path, root["micro_batches"]) + ": micro_batches must be at least 1");
  c.comm_timeout = get<std::string>(path, root, "comm_timeout", "a duration such as 60s");
  const YAML::Node stages = root["stages"];
  if (!stages || !stages.IsSequence() || stages.size() == 0)
    throw FormatError(path + ": 'stages' must be a list with one entry per rank");
  for (const YAML::Node& s : stages) {
    only_keys(path, s,
              {"first_layer", "device", "gpu_mem", "cpu_mem", "disk_mem", "percent", "threads", "gpu_batch_size"},
              "a stage");
    StageConfig st;
    st.first_layer = get<int64_t>(path, s, "first_layer", "a decoder layer index");
    st.device = get<std::string>(path, s, "device", "cpu, cuda or cuda:N");
    st.gpu_mem = get<std::string>(path, s, "gpu_mem", "a size such as 24GiB");
    st.cpu_mem = get<std::string>(path, s, "cpu_mem", "a size such as 64GiB");
    st.disk_mem = get<std::string>(path, s, "disk_mem", "a size such as 200GB");
    // Sizes are checked here, for every stage on every rank: a bad one is the same error everywhere,
    // not one rank's failure that the others see only as a peer that stopped.
    for (const char* key : {"gpu_mem", "cpu_mem", "disk_mem"})
      if (s[key]) parse_bytes(s[key].as<std::string>(), where(path, s[key]) + ": " + key);
    st.percent = get<std::vector<double>>(path, s, "percent", "a list of six percentages");
    st.threads = get<int>(path, s, "threads", "a whole number");
    if (st.threads && (*st.threads < 0 || *st.threads > 4096))
      throw FormatError(where(path, s["threads"]) + ": threads must be 0 (every core) to 4096");
    st.gpu_batch_size = get<int64_t>(path, s, "gpu_batch_size", "a whole number");
    if (st.gpu_batch_size && (*st.gpu_batch_size < 1 || *st.gpu_batch_size > (int64_t{1} << 20)))
      throw FormatError(where(path, s["gpu_batch_size"]) + ": gpu_batch_size must be 1 to 1048576");
    c.stages.push_back(std::move(st));
  }
  c.first_layers();  // given for all or none
  return c;
}

}  // namespace tiergen::cli
