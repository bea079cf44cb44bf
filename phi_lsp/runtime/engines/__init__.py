"""Engines behind one interface (`base.Engine`); `loader.load_engine` picks and loads one.

torch and llama_cpp are imported only inside their engine's module, and only when it loads.
"""
