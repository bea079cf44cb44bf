"""A tiny phi model that has memorised a few small functions.

Random weights produce noise, which post-processing rightly throws away. To test paths whose
output must be valid Python (a generated function body applied to a file), the tiny model is
trained for a few seconds on a handful of functions until greedy decoding reproduces them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from phi_lsp.models.convert import convert_hf_to_gguf
from testkit.tinymodel import TinyModel

LESSONS = [
    'def add(a, b):\n    """Return the sum of a and b.\n\n    >>> add(2, 3)\n    5\n    """\n'
    "    return a + b\n",
    'def is_even(n: int) -> bool:\n    """Whether n is even."""\n    return n % 2 == 0\n',
    'def greet(name):\n    """Say hello to name."""\n    return "Hello, " + name\n',
    # Non-ASCII identifiers: byte-level BPE splits their characters across tokens.
    'def fläche(länge, höhe):\n    """Die Fläche eines Rechtecks."""\n    return länge * höhe\n',
]


def train_tiny_model(base: TinyModel, root: Path, steps: int = 120) -> TinyModel:
    """Fine-tune `base` on LESSONS (deterministic), save HF + F32/F16 GGUF under `root`."""
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base.hf_dir)
    model = AutoModelForCausalLM.from_pretrained(base.hf_dir, dtype=torch.float32)
    eos = tokenizer.eos_token_id
    rows = [tokenizer.encode(text, add_special_tokens=False) + [eos] for text in LESSONS]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [eos] * (width - len(r)) for r in rows])
    labels = torch.tensor([r + [-100] * (width - len(r)) for r in rows])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    hf_dir = root / "trained-phi"
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    f32 = convert_hf_to_gguf(hf_dir, root / "trained-f32.gguf", "f32")
    f16 = convert_hf_to_gguf(hf_dir, root / "trained-f16.gguf", "f16")
    return TinyModel(hf_dir=hf_dir, gguf_f32=f32, gguf_f16=f16)
