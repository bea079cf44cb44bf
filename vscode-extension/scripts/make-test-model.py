"""Build the trained tiny phi model (testkit/trained_model.py) and print its F32 GGUF path.

Usage: python scripts/make-test-model.py OUT_DIR   (with the repo's venv python)
The model memorised `def add(a, b):` + docstring -> `    return a + b`, so ghost text and
generated bodies are real, deterministic code. OUT_DIR's model is reused while the two recipe
files (testkit/tinymodel.py, testkit/trained_model.py) are unchanged.
"""

import hashlib
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECIPE = [REPO / "testkit" / "tinymodel.py", REPO / "testkit" / "trained_model.py"]
sys.path.insert(0, str(REPO))

out = Path(sys.argv[1]).resolve()
stamp = out / "recipe.sha256"
digest = hashlib.sha256(b"".join(p.read_bytes() for p in RECIPE)).hexdigest()
gguf = out / "trained" / "trained-f32.gguf"
if not (gguf.is_file() and stamp.is_file() and stamp.read_text() == digest):
    from testkit.tinymodel import build_tiny_model
    from testkit.trained_model import train_tiny_model

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    base = build_tiny_model(out / "tiny")
    gguf = train_tiny_model(base, out / "trained").gguf_f32
    stamp.write_text(digest)
print(gguf)
