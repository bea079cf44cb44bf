from phi_lsp.lines import lsp_lines


def test_only_lsp_line_breaks_split() -> None:
    assert lsp_lines("a\x0cb\u2028c\x85d\n") == ("a\x0cb\u2028c\x85d\n",)
    assert lsp_lines("a\r\nb\rc\nd") == ("a\r\n", "b\r", "c\n", "d")
    assert lsp_lines("") == () and lsp_lines("\n\n") == ("\n", "\n")
    text = "x\r\n\ry\x0c\n"
    assert "".join(lsp_lines(text)) == text
