import pytest

from policies.units import format_duration, parse_duration


@pytest.mark.parametrize("text,seconds", [
    ("90s", 90), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("250ms", 0.25), (45, 45), ("12", 12), (" 1m ", 60),
])
def test_parse(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "5x", "m5", "5m3", "-5s", True, None, [1], -3, "1.5.2s"])
def test_parse_rejects(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("seconds,text", [(90, "1m30s"), (3600, "1h"), (0, "0s"), (0.25, "250ms"), (86400 + 60, "1d1m")])
def test_format(seconds, text):
    assert format_duration(seconds) == text
