"""transformers reads a `ferrogpt export hf` folder as ferrogpt reads the model.

argv: FERROGPT_BIN MODEL_DIR WORK_DIR (WORK_DIR/hf holds the export). Exits non-zero on any
difference: logits beyond 1e-4 at any position of any prompt, or chat-template tokens that
differ from ferrogpt's own rendering.
"""

import json
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

TOLERANCE = 1e-4
PROMPTS = [
    "The",
    "NAME\n    ls - list directory contents",
    "What is 12 plus 7? The answer is",
    "Ünïcödé and digits 1234567890, then a longer stretch of ordinary English text to fill the window.",
]
CHATS = [
    [{"role": "user", "content": "What is 2 + 2?"}],
    [
        {"role": "system", "content": "Answer in upper case."},
        {"role": "user", "content": "name a colour"},
    ],
]


def ours(binary, model, work, prompt, chat=None):
    """ferrogpt's prompt ids and logits at every position."""
    out = Path(work) / "ours.json"
    args = [binary, "generate", "--model", model, "--logits-out", str(out)]
    if chat is None:
        args += ["--prompt", prompt]
    else:
        system = [m["content"] for m in chat if m["role"] == "system"]
        user = [m["content"] for m in chat if m["role"] == "user"]
        args += ["--chat", "--prompt", user[-1]] + (["--system", system[0]] if system else [])
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    data = json.loads(out.read_text())
    return data["ids"], torch.tensor(data["logits"], dtype=torch.float64)


def main():
    binary, model_dir, work = sys.argv[1:4]
    hf_dir = Path(work) / "hf"
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    failures = 0
    for prompt in PROMPTS:
        ids, want = ours(binary, model_dir, work, prompt)
        with torch.no_grad():
            got = model(torch.tensor([ids])).logits[0].double()
        diff = (got - want).abs().max().item()
        ok = got.shape == want.shape and diff <= TOLERANCE
        failures += not ok
        print(f"logits  {'ok  ' if ok else 'FAIL'} {len(ids):3d} tokens, max |diff| {diff:.2e}: {prompt[:40]!r}")
    for chat in CHATS:
        ids, _ = ours(binary, model_dir, work, "", chat)
        templated = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
        if isinstance(templated, dict) or hasattr(templated, "input_ids"):
            templated = templated["input_ids"]
        ok = list(templated) == ids
        failures += not ok
        print(f"template {'ok  ' if ok else 'FAIL'} {len(ids):3d} tokens: {chat[-1]['content']!r}")
        if not ok:
            print(f"  ferrogpt     {ids}\n  transformers {list(templated)}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
