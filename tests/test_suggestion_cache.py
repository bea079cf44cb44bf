"""The typed-ahead cache: forward typing, backspace into healed text, other documents, bounds."""

from phi_lsp.completion.cache import SuggestionCache

PREFIX = "import os\n\ndef size(path):\n    return os.path."


def test_typing_into_the_suggestion_serves_the_rest() -> None:
    cache = SuggestionCache()
    cache.put("a.py", PREFIX, "", "getsize(path)")
    assert cache.get("a.py", PREFIX, "") == "getsize(path)"
    assert cache.get("a.py", PREFIX + "get", "") == "size(path)"
    assert cache.get("a.py", PREFIX + "getsize(path", "") == ")"
    assert cache.get("a.py", PREFIX + "getsize(path)", "") is None  # fully typed: nothing left
    assert cache.get("a.py", PREFIX + "gex", "") is None  # diverged
    assert cache.hits == 3


def test_backspace_inside_text_the_model_healed_of_its_own_choice_is_served() -> None:
    cache = SuggestionCache()
    # The model backed up over "os.path." and wrote it again before "getsize(path)".
    cache.put("a.py", PREFIX, "", "getsize(path)", healed="path.")
    assert cache.get("a.py", PREFIX, "") == "getsize(path)"
    assert cache.get("a.py", PREFIX[:-1], "") == ".getsize(path)"
    assert cache.get("a.py", PREFIX[:-5], "") == "path.getsize(path)"
    assert cache.get("a.py", PREFIX[:-6], "") is None  # before the healed part: ask the model


def test_backspace_without_healing_asks_the_model() -> None:
    cache = SuggestionCache()
    cache.put("a.py", PREFIX + "x", "", "getsize(path)")  # a typo, then a suggestion after it
    assert cache.get("a.py", PREFIX, "") is None  # Backspace: never the typo served back


def test_other_documents_other_line_suffix_and_edits_above_miss() -> None:
    cache = SuggestionCache()
    cache.put("a.py", PREFIX, ")", "getsize(path")
    assert cache.get("b.py", PREFIX, ")") is None
    assert cache.get("a.py", PREFIX, "") is None
    edited = PREFIX.replace("import os", "import sys")
    assert cache.get("a.py", edited + "get", ")") is None  # same tail, different file above


def test_bounded_per_document_and_in_documents() -> None:
    cache = SuggestionCache(per_document=4, documents=2)
    for i in range(10):
        cache.put("a.py", PREFIX + str(i), "", "x")
    for uri in ("b.py", "c.py"):
        cache.put(uri, PREFIX, "", "x")
    assert len(cache) == 2  # a.py was evicted as the least recent document
    assert cache.get("a.py", PREFIX + "9", "") is None
