# What a user would run instead of `tiergen bench`: Hugging Face transformers `generate`, same workload
# (a preset's shape with random weights, random prompts, greedy, no EOS stop), on the CPU or a GPU,
# printed in the same FlexGen-style lines so the two logs compare line by line.
# usage: python3 tests/bench/hf_baseline.py --model llama-2-7b --device cpu --batch 1 --dtype float32
#        python3 tests/bench/hf_baseline.py --model opt-6.7b --device cuda --batch 32 --dtype float16
import argparse
import time

import torch
from transformers import (LlamaConfig, LlamaForCausalLM, LogitsProcessor, LogitsProcessorList, OPTConfig,
                          OPTForCausalLM)

p = argparse.ArgumentParser()
p.add_argument("--model", default="llama-2-7b", choices=["llama-2-7b", "opt-6.7b"])
p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
p.add_argument("--batch", type=int, default=1)
p.add_argument("--prompt-len", type=int, default=512)
p.add_argument("--gen-len", type=int, default=32)
p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
a = p.parse_args()
dtype = getattr(torch, a.dtype)
torch.manual_seed(0)

if a.model == "llama-2-7b":
    cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)
    cls = LlamaForCausalLM
else:  # the shape of facebook/opt-6.7b
    cfg = OPTConfig(hidden_size=4096, ffn_dim=16384, num_hidden_layers=32, num_attention_heads=32, vocab_size=50272,
                    max_position_embeddings=2048, word_embed_proj_dim=4096, do_layer_norm_before=True)
    cls = OPTForCausalLM
with torch.device("meta"):
    model = cls(cfg)
model = model.to_empty(device=a.device).to(dtype).eval()
with torch.no_grad():  # random weights in place; norms at 1 as in tiergen's dummy weights
    for name, prm in model.named_parameters():
        prm.fill_(1.0) if "norm" in name or "layer_norm" in name else prm.uniform_(-0.0346, 0.0346)
if a.model == "llama-2-7b":
    # The rotary embedding's inv_freq buffer was created on meta: build it again, in f32.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=cfg).to(a.device)


class FirstTokenClock(LogitsProcessor):
    # generate() calls logits processors once per new token; the first call comes right after the
    # prefill forward, so one generate() gives both the prefill and the decode time.
    def __init__(self):
        self.times = []

    def __call__(self, input_ids, scores):
        if a.device == "cuda":
            torch.cuda.synchronize()
        self.times.append(time.time())
        return scores


ids = torch.randint(0, cfg.vocab_size, (a.batch, a.prompt_len), device=a.device)
with torch.no_grad():
    model.generate(ids[:, :8], max_new_tokens=2, do_sample=False)  # warm-up
    clock = FirstTokenClock()
    t = time.time()
    model.generate(ids, max_new_tokens=a.gen_len, min_new_tokens=a.gen_len, do_sample=False,
                   logits_processor=LogitsProcessorList([clock]))
    if a.device == "cuda":
        torch.cuda.synchronize()
    t_all = time.time() - t
    t_pre = clock.times[0] - t
t_dec = max(t_all - t_pre, 1e-9)
where = torch.cuda.get_device_name() if a.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
print(f"model: {a.model} (hf transformers {a.dtype})\tdevice: {where}\t"
      f"batch: {a.batch}\tprompt_len: {a.prompt_len}\tgen_len: {a.gen_len}")
print(f"prefill latency: {t_pre:.3f} s\tprefill throughput: {a.batch * a.prompt_len / t_pre:.3f} token/s")
print(f"decode latency: {t_dec:.3f} s\tdecode throughput: {a.batch * (a.gen_len - 1) / t_dec:.3f} token/s")
print(f"total latency: {t_all:.3f} s\ttotal throughput: {a.batch * a.gen_len / t_all:.3f} token/s", flush=True)
if a.device == "cuda":
    print(f"peak gpu mem: {torch.cuda.max_memory_allocated() / 1e9:.3f} GB", flush=True)
