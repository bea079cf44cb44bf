"""The code that runs inside the sandboxed process, and nowhere else.

The parent (`phi_lsp.sandbox.runner`) starts `python -I -S -B ... -c BOOTSTRAP CONFIG SOURCES`:
`bootstrap.py` is the `-c` program, and SOURCES carries the text of `landlock.py`,
`seccomp.py`, `guard.py` and `prelude.py`, read once by the parent. The child thus reads no
file of phi_lsp (its directory may be out of Landlock's reach, and the program's `sys.path`
stays the standard library's), so these modules import only the standard library and each
other. `prelude.main` applies the layers in order and runs the program.
"""
