import sys
from pathlib import Path

# `python -m phi_lsp` puts the working directory first on the import path, so a workspace file
# named like a standard module (cmd.py, code.py) would shadow it and break the server. phi_lsp's
# own modules are found through the package, which is already imported.
if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == Path.cwd().resolve():
    sys.path.pop(0)

from phi_lsp.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
