"""`phi-lsp finetune`: textbook-style exercises from the user's repositories, LoRA on top of phi.

The pipeline, one module per stage, each usable on its own:

- `sources`: which files of a repository to read (git-tracked, or a walk that respects
  .gitignore), skipping vendored, generated, minified, huge and binary files. Read only.
- `mining`: every function or method with a docstring becomes an exercise: prompt = imports +
  class header + signature + docstring, target = the body (the CodeExercises format).
- `filters`: the textbook-quality rules, each counted.
- `dedupe`: exact and MinHash near-duplicates, and HumanEval decontamination.
- `dataset`: runs the above, splits train / validation by file, writes JSONL + a report.
- `config`: the trainer's knobs (`TrainConfig`), one `--flag` each. Plain Python.
- `train`: the LoRA / QLoRA trainer (reads top to bottom), with exact `--resume`, built on:
  - `model`: the base model loaded frozen (fp32 / bf16 / NF4), then LoRA on its linears;
  - `batches`: exercise → ids + body-only labels, padding, the deterministic batch order;
  - `losses`: the body loss per step and per exercise, validation, the base-model loss filter;
  - `checkpoint`: checkpoints, RNG states, atomic writes, SIGTERM / SIGINT → `Interrupted`.
- `report`: before/after validation loss and doctest pass rate, markdown + JSON + PNG.
- `export`: the adapter folder, a llama.cpp LoRA GGUF, a merged GGUF.
- (`phi_lsp.cli.finetune`: `add_parser(subparsers)` for `phi-lsp finetune`.)

Only the trainer (`train` and the modules under it), `report` and `export` import torch; the
data stages are plain Python.
"""
