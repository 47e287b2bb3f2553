"""Checks a folder written by t6-export as Hugging Face transformers would use it.

usage: hf_check.py EXPORT_DIR TEXT_FILE BLOCK_SIZE
Prints `hf_loss L` (the mean loss over the windows of TEXT_FILE that t6_reference.py and t6-eval
use, TEXT_FILE tokenized as t6-prepare does: bytes, or GPT-2 through the exported tokenizer) and `hf_path transformers|stand-in`. With transformers installed it loads the folder through
AutoConfig / AutoModelForCausalLM (trust_remote_code, offline), checks that the output head is
tied to the embedding, and that generate() returns the same greedy tokens with and without
use_cache as a plain argmax loop; for a folder with tokenizer files, that AutoTokenizer encodes
the committed GPT-2 test vectors as the trainer's tokenizer does. Without transformers it runs
the exported modeling_t6.py under a minimal stand-in for the few transformers classes it
subclasses (so the model's math is still checked against t6-eval, and the rest is skipped).
"""
import importlib.util
import json
import os
import sys
import types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from t6_reference import read_safetensors  # noqa: E402


def install_stand_in():
    """The names modeling_t6.py imports from transformers, reduced to what its math needs."""
    tf = types.ModuleType("transformers")
    tf.__version__ = "0.stand-in"

    class PretrainedConfig:
        def __init__(self, **kwargs):
            for k, v in kwargs.items():
                setattr(self, k, v)

    class PreTrainedModel(torch.nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config

        def post_init(self):
            if getattr(self.config, "tie_word_embeddings", False):
                self.get_output_embeddings().weight = self.get_input_embeddings().weight

    class GenerationMixin:
        pass

    outputs = types.ModuleType("transformers.modeling_outputs")

    class CausalLMOutputWithPast:
        def __init__(self, loss=None, logits=None, past_key_values=None):
            self.loss, self.logits, self.past_key_values = loss, logits, past_key_values

    tf.PretrainedConfig, tf.PreTrainedModel, tf.GenerationMixin = PretrainedConfig, PreTrainedModel, GenerationMixin
    outputs.CausalLMOutputWithPast = CausalLMOutputWithPast
    tf.modeling_outputs = outputs
    sys.modules["transformers"], sys.modules["transformers.modeling_outputs"] = tf, outputs


def load_with_stand_in(export_dir):
    install_stand_in()
    spec = importlib.util.spec_from_file_location("modeling_t6", os.path.join(export_dir, "modeling_t6.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = json.load(open(os.path.join(export_dir, "config.json")))
    model = module.T6ForCausalLM(module.T6Config(**cfg))
    weights = read_safetensors(os.path.join(export_dir, "model.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected, f"unexpected tensors: {unexpected}"
    assert missing == ["lm_head.weight"], f"missing tensors: {missing}"
    return model


def load_real(export_dir):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(export_dir, trust_remote_code=True, local_files_only=True)
    assert config.model_type == "t6" and config.max_position_embeddings == config.block_size
    import transformers
    # transformers 5 renamed from_pretrained's torch_dtype to dtype (the old name warns).
    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    return AutoModelForCausalLM.from_pretrained(export_dir, trust_remote_code=True, local_files_only=True,
                                                **{dtype_key: torch.float32})


def mean_loss(model, stream, T):
    losses = []
    with torch.no_grad():
        for w in range((len(stream) - 1) // T):
            # T + 1 tokens: the model shifts the labels, so it predicts tokens 1 … T from 0 … T − 1
            window = torch.tensor(stream[w * T: w * T + T + 1], dtype=torch.long)[None]
            losses.append(model(input_ids=window, labels=window).loss.item())
    return sum(losses) / len(losses)


def check_generate(model, prompt, n):
    """generate(), with and without use_cache, against a plain greedy loop over forward()."""
    ids = torch.tensor([prompt], dtype=torch.long)
    want = ids
    with torch.no_grad():
        for _ in range(n):
            nxt = model(input_ids=want).logits[:, -1].argmax(-1, keepdim=True)
            want = torch.cat([want, nxt], 1)
        for use_cache in (True, False):
            got = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                                 use_cache=use_cache, pad_token_id=0)
            assert torch.equal(got, want), f"generate(use_cache={use_cache}) gave {got.tolist()}, want {want.tolist()}"


def check_tokenizer(export_dir):
    from transformers import AutoTokenizer

    # trust_remote_code as lm-eval passes it: transformers 5 reads config.json (model_type t6,
    # defined by the folder's own code) even for the tokenizer, and asks without it.
    tok = AutoTokenizer.from_pretrained(export_dir, local_files_only=True, trust_remote_code=True)
    cases = json.load(open(os.path.join(HERE, "..", "tokenizer", "gpt2_vectors.json")))
    checked = 0
    for case in cases:
        try:
            text = bytes.fromhex(case["hex"]).decode("utf-8")
        except UnicodeDecodeError:  # a byte-level case that is not text: no string to give a tokenizer
            continue
        got = tok.encode(text)
        assert got == case["ids"], f"AutoTokenizer on {case['name']}: {got}, want {case['ids']}"
        checked += 1
    # The end-of-text marker inside a text is text, as t6-prepare encodes it (data/README.md).
    marker = tok.encode("a <|endoftext|> b")
    assert marker == [64, 1279, 91, 437, 1659, 5239, 91, 29, 275], f"<|endoftext|> inside a text gave {marker}"
    print(f"hf_tokenizer {checked} vectors equal, <|endoftext|> in text split")


def main():
    export_dir, text_file, T = sys.argv[1], sys.argv[2], int(sys.argv[3])
    try:
        import transformers  # noqa: F401
        real = True
    except ImportError:
        real = False
    model = load_real(export_dir) if real else load_with_stand_in(export_dir)
    model.eval()
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "lm_head is not tied to wte"
    text = open(text_file, "rb").read()
    gpt2 = os.path.exists(os.path.join(export_dir, "vocab.json"))
    if gpt2 and not real:
        print("SKIPPED: a GPT-2 export needs transformers' tokenizer to make the token stream")
        sys.exit(77)
    # The stream t6-prepare makes of a one-document file: its tokens, then end-of-text. For
    # GPT-2, through the exported tokenizer (whose equality with ours check_tokenizer proves).
    if gpt2:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(export_dir, local_files_only=True, trust_remote_code=True)
        stream = tok.encode(text.decode("utf-8")) + [50256]
    else:
        stream = list(text) + [0]
    print(f"hf_loss {mean_loss(model, stream, T):.8f}")
    if real:
        check_generate(model, stream[:5], 8)
        print("hf_generate equal with and without use_cache")
        if gpt2:
            check_tokenizer(export_dir)
    print(f"hf_path {'transformers ' + transformers.__version__ if real else 'stand-in'}")


if __name__ == "__main__":
    main()
