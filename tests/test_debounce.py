from phi_lsp.completion.debounce import TypingRhythm


def test_no_wait_without_a_rhythm_or_after_a_pause() -> None:
    rhythm = TypingRhythm()
    assert rhythm.delay(0.0, 0.15) == 0.0
    rhythm.keystroke(0.0)
    rhythm.keystroke(2.0)  # a pause is not a rhythm
    assert rhythm.delay(2.0, 0.15) == 0.0


def test_fast_typing_waits_a_little_slow_typing_does_not() -> None:
    fast = TypingRhythm()
    for i in range(10):
        fast.keystroke(i * 0.08)
    assert 0.09 <= fast.delay(0.72, 0.15) <= 0.1  # 1.2 x 80 ms
    assert fast.delay(0.72 + 0.05, 0.15) < fast.delay(0.72, 0.15)  # time already waited counts
    assert fast.delay(0.72, 0.05) == 0.05  # capped
    slow = TypingRhythm()
    for i in range(10):
        slow.keystroke(i * 0.4)
    assert slow.delay(3.6, 0.15) == 0.0
