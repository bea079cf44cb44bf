"""Models: manifests, where a model is (source), checks, the cache (store), the hub, quantize,
convert, and the shared engine launcher. Below every other layer but the shared modules."""
