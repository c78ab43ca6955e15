"""Board data files and the board registry (flipq.boards)."""

import pytest

from flipq.boards import BOARD_FILES, Board, BoardError, known_boards, load_board, load_board_file


def test_pynq_z2_facts():
    b = load_board("pynq-z2")
    assert isinstance(b, Board)
    assert b.part == "xc7z020clg400-1"
    assert b.board_part == "tul.com.tw:pynq-z2:part0:1.0"
    assert dict(b.resources) == {"lut": 53200, "ff": 106400, "bram36": 140, "dsp": 220, "uram": 0}
    assert b.fclk0_mhz == 100.0 and b.ddr_mb == 512
    assert b.dma_data_width == 32 and b.family == "zynq" and b.ps == "processing_system7"
    assert "v3.1" in b.pynq_images and b.pynq_python == "3.10"


@pytest.mark.parametrize("name", ["pynq_z2", "PYNQ-Z2", " pynq-z2 "])
def test_name_spellings(name):
    assert load_board(name).name == "pynq-z2"


def test_every_registered_board_loads():
    for name in known_boards():
        b = load_board(name)
        assert b.name == name
        assert b.resources["lut"] > 0
    assert load_board("pynq-z1").part == load_board("pynq-z2").part
    zcu = load_board("zcu104")
    assert zcu.family == "zynq_ultra" and zcu.part.startswith("xczu7ev")


def test_unknown_board_lists_known():
    with pytest.raises(BoardError) as e:
        load_board("arty-a7")
    msg = str(e.value)
    assert "'arty-a7'" in msg
    for name in BOARD_FILES:
        assert name in msg


def test_fits():
    b = load_board("pynq-z2")
    assert b.fits({"lut": 100, "bram36": 140}) == []
    over = b.fits({"lut": 60000, "dsp": 10})
    assert over == ["lut: needs 60000, pynq-z2 has 53200"]


def test_board_is_frozen():
    b = load_board("pynq-z2")
    with pytest.raises(Exception):
        b.part = "x"  # type: ignore[misc]


def test_malformed_file_names_field(tmp_path):
    src = (load_board("pynq-z2").source)
    text = open(src).read().replace("lut = 53200", 'lut = "many"')
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(BoardError, match=r"bad.toml: field resources.lut = 'many' is not a int"):
        load_board_file(p)
    p.write_text(open(src).read().replace('part = "xc7z020clg400-1"\n', ""))
    with pytest.raises(BoardError, match="missing field part"):
        load_board_file(p)
    p.write_text(open(src).read().replace("max_length_width = 26", "max_length_width = 30"))
    with pytest.raises(BoardError, match="dma.max_length_width = 30"):
        load_board_file(p)


def test_clock_facts_and_their_checks(tmp_path):
    z2 = load_board("pynq-z2")
    assert (z2.pll_mhz, z2.divisor_max, z2.fclk_min_mhz, z2.fclk_max_mhz) == (1000.0, 63, 10.0, 250.0)
    assert load_board("zcu104").pll_mhz == 1500.0
    src = open(z2.source).read()
    p = tmp_path / "bad.toml"
    p.write_text(src.replace("fclk0_mhz = 100.0", "fclk0_mhz = 300.0"))
    with pytest.raises(BoardError, match=r"clocks.fclk_min_mhz <= fclk0_mhz <= clocks.fclk_max_mhz"):
        load_board_file(p)
    p.write_text(src.replace("divisor_max = 63", "divisor_max = 64"))
    with pytest.raises(BoardError, match="clocks.divisor_max = 64 is outside 1..63"):
        load_board_file(p)
    p.write_text(src.replace("pll_mhz = 1000.0\n", ""))
    with pytest.raises(BoardError, match="missing field clocks.pll_mhz"):
        load_board_file(p)
