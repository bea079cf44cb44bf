"""The engine worker (runner), the engines, and what engine and trainer share (devices,
adapters); `verify` loads a cached model with each engine."""
