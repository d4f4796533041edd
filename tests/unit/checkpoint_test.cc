// Checkpoint: real Hugging Face folders (single file and sharded with an index) open with the
// tensors their headers and index list; a hostile or stale index is a FormatError naming it.
// Broken folders are built from copies of llama-tiny-gqa's shards plus a hand-written index.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runtime/core/error.h"
#include "runtime/model/safetensors.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

namespace fs = std::filesystem;
using testing::hf_model_dir;
using testing::TempDir;
using testing::write_file;

constexpr const char* kShard1 = "model-00001-of-00008.safetensors";  // model.embed_tokens.weight
constexpr const char* kShard8 = "model-00008-of-00008.safetensors";  // layer 2 norms/down_proj, final norm

nlohmann::json read_json(const fs::path& p) { return nlohmann::json::parse(testing::read_file(p)); }

TEST(CheckpointTest, SingleFileQwen2) {
  const fs::path dir = hf_model_dir("qwen2-tiny");
  Checkpoint ck = Checkpoint::open(dir);
  EXPECT_EQ(ck.dir(), dir);
  EXPECT_EQ(ck.names().size(), 26u);            // 1 embedding + 2 layers x 12 + final norm
  EXPECT_FALSE(ck.contains("lm_head.weight"));  // tied to the embedding
  Tensor emb = ck.get("model.embed_tokens.weight");
  EXPECT_EQ(emb.dtype(), DType::BF16);
  EXPECT_EQ(emb.shape(), (Shape{1200, 64}));
  EXPECT_EQ(emb.tier(), Tier::Mmap);
  EXPECT_EQ(ck.get("model.layers.1.self_attn.k_proj.bias").shape(), (Shape{32}));
}

TEST(CheckpointTest, ShardedLlamaMatchesIndexAndShardHeaders) {
  const fs::path dir = hf_model_dir("llama-tiny-gqa");
  Checkpoint ck = Checkpoint::open(dir);
  const nlohmann::json wm = read_json(dir / "model.safetensors.index.json")["weight_map"];
  EXPECT_EQ(ck.names().size(), wm.size());
  EXPECT_EQ(ck.names().size(), 30u);  // lm_head + embedding + 3 layers x 9 + final norm
  for (const auto& [name, shard] : wm.items()) {
    ASSERT_TRUE(ck.contains(name)) << name;
    // What the checkpoint hands out is what that shard's own header says.
    auto file = SafetensorsFile::open(dir / shard.get<std::string>());
    const TensorInfo* info = file->find(name);
    ASSERT_NE(info, nullptr) << name;
    Tensor t = ck.get(name);
    EXPECT_EQ(t.shape(), info->shape) << name;
    EXPECT_EQ(t.dtype(), info->dtype) << name;
    EXPECT_EQ(t.dtype(), DType::BF16) << name;
  }
  EXPECT_EQ(ck.get("model.embed_tokens.weight").shape(), (Shape{1200, 64}));
  EXPECT_EQ(ck.get("lm_head.weight").shape(), (Shape{1200, 64}));
  EXPECT_EQ(ck.get("model.layers.0.self_attn.k_proj.weight").shape(),
            (Shape{16, 64}));  // GQA: 2 KV heads x 8
}

TEST(CheckpointTest, EveryReferenceModelOpens) {
  for (const char* name : {"opt-tiny", "opt-tiny-postln-proj", "llama-tiny-gqa", "mistral-tiny", "qwen2-tiny",
                           "bloom-tiny", "bloom-tiny-6heads"}) {
    Checkpoint ck = Checkpoint::open(hf_model_dir(name));
    EXPECT_GT(ck.names().size(), 0u) << name;
    for (const std::string& t : ck.names()) EXPECT_TRUE(ck.get(t).defined()) << name << " " << t;
  }
}

TEST(CheckpointTest, MissingTensorNamesTensorAndFolder) {
  Checkpoint ck = Checkpoint::open(hf_model_dir("qwen2-tiny"));
  EXPECT_THROW_WITH(ck.get("lm_head.weight"), NotFoundError, "'lm_head.weight'");
  EXPECT_THROW_WITH(ck.get("lm_head.weight"), NotFoundError, hf_model_dir("qwen2-tiny").string());
}

TEST(CheckpointTest, EmptyFolderIsNotFoundNamingBothFiles) {
  TempDir dir;
  EXPECT_THROW_WITH(Checkpoint::open(dir.path()), NotFoundError, dir.path().string());
  EXPECT_THROW_WITH(Checkpoint::open(dir.path()), NotFoundError,
                    "model.safetensors.index.json nor model.safetensors");
  EXPECT_THROW_WITH(Checkpoint::open(dir / "absent"), NotFoundError, "no checkpoint in");
}

// A folder with copies of some llama-tiny-gqa shards and the given index text.
class ShardedFolderTest : public ::testing::Test {
 protected:
  void copy_shard(const std::string& from, const std::string& to) {
    fs::copy_file(hf_model_dir("llama-tiny-gqa") / from, dir_ / to);
  }
  void write_index(const nlohmann::json& weight_map) {
    write_file(index(), nlohmann::json{{"metadata", {{"total_size", 1}}}, {"weight_map", weight_map}}.dump());
  }
  fs::path index() const { return dir_ / "model.safetensors.index.json"; }

  TempDir dir_;
};

TEST_F(ShardedFolderTest, ValidSubsetOpens) {
  copy_shard(kShard1, "a.safetensors");
  copy_shard(kShard8, "sub-b.safetensors");
  write_index({{"model.embed_tokens.weight", "a.safetensors"}, {"model.norm.weight", "sub-b.safetensors"}});
  Checkpoint ck = Checkpoint::open(dir_.path());
  // Tensors a shard holds but the index does not list are still reachable.
  EXPECT_EQ(ck.names().size(), 5u);  // 1 in shard 1 + 4 in shard 8
  EXPECT_TRUE(ck.contains("model.layers.2.mlp.down_proj.weight"));
}

TEST_F(ShardedFolderTest, IndexWinsOverSingleFile) {
  copy_shard(kShard1, "a.safetensors");
  fs::copy_file(hf_model_dir("qwen2-tiny") / "model.safetensors", dir_ / "model.safetensors");
  write_index({{"model.embed_tokens.weight", "a.safetensors"}});
  EXPECT_EQ(Checkpoint::open(dir_.path()).names(), std::vector<std::string>{"model.embed_tokens.weight"});
}

TEST_F(ShardedFolderTest, SymlinkedShardIsFollowed) {
  // The Hugging Face cache lays snapshots out as links into a blob store outside the folder.
  TempDir blobs;
  fs::copy_file(hf_model_dir("llama-tiny-gqa") / kShard1, blobs / "blob");
  fs::create_symlink(blobs / "blob", dir_ / "a.safetensors");
  write_index({{"model.embed_tokens.weight", "a.safetensors"}});
  EXPECT_EQ(Checkpoint::open(dir_.path()).get("model.embed_tokens.weight").shape(), (Shape{1200, 64}));
}

TEST_F(ShardedFolderTest, ShardInSubfolderAndSameShardSpelledTwice) {
  fs::create_directory(dir_ / "sub");
  copy_shard(kShard8, "sub/b.safetensors");
  write_index({{"model.norm.weight", "sub/b.safetensors"},
               {"model.layers.2.input_layernorm.weight", "./sub/b.safetensors"}});
  EXPECT_EQ(Checkpoint::open(dir_.path()).names().size(), 4u);  // opened once: no "in both" error
}

TEST_F(ShardedFolderTest, AbsoluteShardPath) {
  copy_shard(kShard1, "a.safetensors");
  write_index({{"model.embed_tokens.weight", (dir_ / "a.safetensors").string()}});
  EXPECT_THROW_WITH(Checkpoint::open(dir_.path()), FormatError, "is an absolute path");
  EXPECT_THROW_WITH(Checkpoint::open(dir_.path()), FormatError, index().string());
}

TEST_F(ShardedFolderTest, ParentDirectoryShardPath) {
  write_index({{"model.embed_tokens.weight", "../x"}});
  EXPECT_THROW_WITH(Checkpoint::open(dir_.path()), FormatError, "shard \"../x\" contains \"..\"");
  write_index({{"model.embed_tokens.weight", "sub/../../x.safetensors"}});
  EXPECT_THROW_WITH(Checkpoint::open(dir_.path()), FormatError, "contains \"..\"");
}

TEST_F(ShardedFolderTest, ShardIsDirectory) {
  fs::create_directory(dir_ / "d.safetensors");
  write_index({{"model.embed_tokens.weight", "d.safetensors"}});
  EXPECT_THROW_WITH(Checkpoint::open(dir_.path()), FormatError, "shard \"d.safetensors\" is a directory");
}

TEST_F(ShardedFolderTest, ShardMissing) {
  write_index({{"model.embed_tokens.weight", "gone.safetensors"}});
  EXPECT_THROW_WITH(Checkpoint::open(dir_.path()), FormatError, "shard \"gone.safetensors\" does not exist");
  fs::create_symlink(dir_ / "nowhere", dir_ / "gone.safetensors");
  EXPECT_THROW_WITH(Checkpoint::open(dir_.path()), FormatError, "is a dangling symlink");
  write_index({{"model.embed_tokens.weight", ""}});
  EXPECT_THROW_WITH(Checkpoint::open(dir_.path()), FormatError, "is an empty name");
}

TEST_F(ShardedFolderTest, TensorMissingFromItsShard) {
  copy_shard(kShard1, "a.safetensors");
  write_index({{"model.embed_tokens.weight", "a.safetensors"}, {"model.norm.weight", "a.safetensors"}});
  EXPECT_THROW_WITH(Checkpoint::open(dir_.path()), FormatError,
                    "maps tensor 'model.norm.weight' to shard \"a.safetensors\", which does not contain it");
}

TEST_F(ShardedFolderTest, TensorInTwoShards) {
  copy_shard(kShard1, "a.safetensors");
  copy_shard(kShard1, "b.safetensors");
  write_index({{"model.embed_tokens.weight", "a.safetensors"}, {"x", "b.safetensors"}});
  EXPECT_THROW_WITH(Checkpoint::open(dir_.path()), FormatError,
                    "tensor 'model.embed_tokens.weight' is in both");
}

TEST_F(ShardedFolderTest, IndexNotJson) {
  write_file(index(), "{\"weight_map\": {");
  EXPECT_THROW_WITH(Checkpoint::open(dir_.path()), FormatError, "not valid JSON");
  EXPECT_THROW_WITH(Checkpoint::open(dir_.path()), FormatError, index().string());
  write_file(index(), R"({"metadata": {"total_size": 1e400}, "weight_map": {}})");  // out of double range
  EXPECT_THROW_WITH(Checkpoint::open(dir_.path()), FormatError, "not valid JSON");
  write_file(index(), "[]");
  EXPECT_THROW_WITH(Checkpoint::open(dir_.path()), FormatError, "must be a JSON object");
}

TEST_F(ShardedFolderTest, IndexLacksWeightMap) {
  write_file(index(), R"({"metadata": {}})");
  EXPECT_THROW_WITH(Checkpoint::open(dir_.path()), FormatError, "lacks a \"weight_map\" object");
  write_file(index(), R"({"weight_map": ["a.safetensors"]})");
  EXPECT_THROW_WITH(Checkpoint::open(dir_.path()), FormatError, "lacks a \"weight_map\" object");
  write_file(index(), R"({"weight_map": {"w": 3}})");
  EXPECT_THROW_WITH(Checkpoint::open(dir_.path()), FormatError,
                    "weight_map entry for 'w' must be a file name");
}

TEST_F(ShardedFolderTest, MalformedShardNamesTheShard) {
  write_file(dir_ / "a.safetensors", "short");
  write_index({{"w", "a.safetensors"}});
  EXPECT_THROW_WITH(Checkpoint::open(dir_.path()), FormatError,
                    (dir_ / "a.safetensors").string() + ": file is 5 bytes");
}

}  // namespace
}  // namespace tiergen
