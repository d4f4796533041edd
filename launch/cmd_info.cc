// tiergen info: what a model is (family, shapes, parameters, bytes) before anything runs.
#include <iostream>
#include <nlohmann/json.hpp>

#include "launch/commands.h"

namespace tiergen::cli {

Command add_info(CLI::App& app) {
  struct Args {
    ModelSource source;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("info", "Describe a model: architecture, parameter count, memory");
  a->source.add_flags(*cmd);
  cmd->add_flag("--json", a->json, "Print JSON");
  return {cmd, [a] {
            a->source.validate();
            // A folder's weights are mapped, not read; a preset is described from its shape alone (generating
            // 140 GB of dummy weights to print a number would be absurd).
            std::unique_ptr<Model> model;
            ModelSpec s;
            size_t weight_bytes = 0;
            std::string source = "dummy weights (" + a->source.dummy + ")";
            if (a->source.dummy.empty()) {
              model = a->source.load();
              s = model->spec();
              weight_bytes = model->weight_bytes();
              source = model->source();
            } else {
              s = preset_model_spec(a->source.dummy);
              weight_bytes = static_cast<size_t>(s.num_params()) * 2;
            }
            const size_t kv_per_token = static_cast<size_t>(2 * s.num_layers * s.num_kv_heads * s.head_dim) * 4;
            nlohmann::json j = {{"family", family_name(s.family)},
                                {"model_type", s.model_type},
                                {"source", source},
                                {"layers", s.num_layers},
                                {"hidden_size", s.hidden_size},
                                {"heads", s.num_heads},
                                {"kv_heads", s.num_kv_heads},
                                {"head_dim", s.head_dim},
                                {"intermediate_size", s.intermediate_size},
                                {"vocab_size", s.vocab_size},
                                {"max_position_embeddings", s.max_position_embeddings},
                                {"dtype", dtype_name(s.dtype)},
                                {"parameters", s.num_params()},
                                {"weight_bytes", weight_bytes},
                                {"kv_cache_bytes_per_token_f32", kv_per_token}};
            if (a->json) {
              std::cout << j.dump(2) << "\n";
              return 0;
            }
            const double gb = 1e9;
            std::cout << "model:        " << source << "\n"
                      << "architecture: " << family_name(s.family) << " (model_type " << s.model_type << ")\n"
                      << "layers:       " << s.num_layers << "  hidden " << s.hidden_size << "  heads " << s.num_heads
                      << " (kv " << s.num_kv_heads << ", head_dim " << s.head_dim << ")  ffn " << s.intermediate_size
                      << "\n"
                      << "vocabulary:   " << s.vocab_size << "  max positions " << s.max_position_embeddings << "\n"
                      << "parameters:   " << s.num_params() << " (" << s.num_params() / 1e6 << " M)\n"
                      << "weights:      " << weight_bytes / gb << " GB as stored ("
                      << dtype_name(a->source.dummy.empty() ? s.dtype : DType::F16) << ")\n"
                      << "KV cache:     " << kv_per_token << " bytes per token (f32, CPU backend)\n"
                      << "placement:    all on cpu (tiered placement comes with the policy)\n";
            return 0;
          }};
}

}  // namespace tiergen::cli
